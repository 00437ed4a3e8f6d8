"""Evaluation metrics for multi-scenario, multi-task predictions, and the ``metrics.json`` layout.

Every metric is computed per cell (scenario × task) and overall (per task, all scenarios pooled), because
a multi-scenario model that wins on average can still lose on a small scenario — the cell table is what
shows the seesaw. All computations are vectorised numpy in float64; AUC is exact (rank statistic with
average ranks for ties), not a histogram approximation.

``metrics.json`` schema (also what :func:`compute_metrics` returns, plus the run fields)::

    {
      "split": "test",                 # which split was evaluated
      "model": "shared_bottom",        # registered model name
      "dataset": "hillstrom",          # dataset name
      "seed": 0,
      "params": 12345,                 # number of model parameters
      "train_seconds": 12.3,           # wall-clock training time (summed over resumed segments)
      "samples_per_second": 40000.0,   # training rows processed per second (all ranks)
      "best_epoch": 3,                 # epoch whose weights were kept (0-based)
      "epochs": 5,                     # epochs trained
      "world_size": 1,                 # training processes (torchrun --nproc_per_node)
      "mean_auc": 0.71,                # mean AUC over scenario × binary-task cells with both classes
      "weighted_auc": 0.70,            # same cells, each weighted by its positives (small cells cannot dominate)
      "mean_gauc": 0.65,               # same for GAUC (null when the data has no user id)
      "mean_rmse": null,               # mean RMSE over scenario × regression-task cells (null if none)
      "overall": {TASK: CELL, ...},    # every scenario pooled
      "by_scenario": {SCENARIO: {TASK: CELL, ...}, ...}
    }

A binary-task CELL is ``{"rows", "positives", "auc", "gauc", "logloss", "pred_mean", "label_mean"}``; a
regression-task CELL is ``{"rows", "rmse", "mae", "pred_mean", "label_mean"}``. ``auc`` is null when the
cell holds a single class; ``gauc`` (impression-weighted mean of per-user AUC over users with both
classes) is null when there is no ``user_id`` or no user has both classes. ``pred_mean`` is the mean
predicted probability (binary) or value (regression). Rows whose label is NaN are left out of that task.
Cells of scenarios with no rows report ``rows: 0`` and null values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from msmtrec.data.dataset import TensorDataset
from msmtrec.data.schema import Schema


def _grouped_auc(
    labels: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUC of every group at once: (auc per group, rows per group, whether the group has both classes).

    Rows are sorted by (group, score); the average rank of each row inside its group comes from the
    start/end positions of its tie block, and per-group rank sums of positives are a ``bincount``. The
    Mann–Whitney identity AUC = (R⁺ − P(P+1)/2) / (P·N) then gives every group's AUC without a loop.
    """
    n = scores.shape[0]
    if n == 0:
        empty = np.zeros(0)
        return empty, empty.astype(np.int64), empty.astype(bool)
    scores = scores.astype(np.float64, copy=False)
    y = labels.astype(np.float64, copy=False)
    if groups is None:
        order = np.argsort(scores, kind="stable")
        g = np.zeros(n, dtype=np.int64)
    else:
        order = np.lexsort((scores, groups))
        g = groups[order]
    s, y = scores[order], y[order]
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    new_group[1:] = g[1:] != g[:-1]
    group_id = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)
    new_tie = new_group.copy()
    new_tie[1:] |= s[1:] != s[:-1]
    tie_id = np.cumsum(new_tie) - 1
    tie_start = np.flatnonzero(new_tie)
    tie_end = np.append(tie_start[1:], n) - 1
    rank = (tie_start + tie_end)[tie_id] / 2.0 - group_start[group_id] + 1.0
    n_groups = group_start.shape[0]
    size = np.bincount(group_id, minlength=n_groups)
    pos = np.bincount(group_id, weights=y, minlength=n_groups)
    neg = size - pos
    rank_sum = np.bincount(group_id, weights=rank * y, minlength=n_groups)
    valid = (pos > 0) & (neg > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = np.where(valid, (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg), np.nan)
    return auc, size, valid


def auc(labels: np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor) -> float | None:
    """Exact ROC AUC with ties counted as half (average ranks); ``None`` when only one class is present."""
    a, _, valid = _grouped_auc(_np(labels), _np(scores))
    return float(a[0]) if valid.size and valid[0] else None


def gauc(
    labels: np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor, users: np.ndarray | torch.Tensor
) -> float | None:
    """Group AUC: per-user AUC averaged with weights = the user's rows, over users having both classes."""
    a, size, valid = _grouped_auc(_np(labels), _np(scores), _np(users).astype(np.int64))
    if not valid.any():
        return None
    w = size[valid].astype(np.float64)
    return float((a[valid] * w).sum() / w.sum())


def binary_cell(
    labels: np.ndarray, logits: np.ndarray, users: np.ndarray | None = None
) -> dict[str, float | int | None]:
    """Metrics of one binary cell from exposure-space logits (ranking on logits avoids sigmoid ties)."""
    n = int(labels.shape[0])
    if n == 0:
        return {"rows": 0, "positives": 0, "auc": None, "gauc": None, "logloss": None,
                "pred_mean": None, "label_mean": None}
    x = logits.astype(np.float64)
    y = labels.astype(np.float64)
    logloss = float(np.mean(np.logaddexp(0.0, x) - y * x))
    prob = 1.0 / (1.0 + np.exp(-x))
    return {
        "rows": n,
        "positives": int(y.sum()),
        "auc": auc(y, x),
        "gauc": gauc(y, x, users) if users is not None else None,
        "logloss": logloss,
        "pred_mean": float(prob.mean()),
        "label_mean": float(y.mean()),
    }


def regression_cell(labels: np.ndarray, preds: np.ndarray) -> dict[str, float | int | None]:
    """RMSE / MAE of one regression cell in the model's (transformed) target space."""
    n = int(labels.shape[0])
    if n == 0:
        return {"rows": 0, "rmse": None, "mae": None, "pred_mean": None, "label_mean": None}
    err = preds.astype(np.float64) - labels.astype(np.float64)
    return {
        "rows": n,
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "pred_mean": float(preds.astype(np.float64).mean()),
        "label_mean": float(labels.astype(np.float64).mean()),
    }


@dataclass
class Predictions:
    """Raw model outputs of a whole split (logits for binary tasks, values for regression) with labels."""

    outputs: dict[str, np.ndarray]
    labels: np.ndarray
    scenario: np.ndarray
    user_id: np.ndarray | None = None

    @staticmethod
    def concat(parts: list[Predictions]) -> Predictions:
        """Join per-rank (or per-chunk) predictions; metrics do not depend on row order."""
        parts = [p for p in parts if p.labels.shape[0]] or parts[:1]
        users = [p.user_id for p in parts]
        return Predictions(
            outputs={k: np.concatenate([p.outputs[k] for p in parts]) for k in parts[0].outputs},
            labels=np.concatenate([p.labels for p in parts]),
            scenario=np.concatenate([p.scenario for p in parts]),
            user_id=None if any(u is None for u in users) else np.concatenate(users),  # type: ignore[arg-type]
        )


@torch.no_grad()
def predict_split(
    model: nn.Module, dataset: TensorDataset, batch_size: int = 8192, device: torch.device | str = "cpu"
) -> Predictions:
    """Batch a split through ``model`` in eval mode without gradients; restores the previous mode."""
    was_training = model.training
    model.eval()
    outs: dict[str, list[torch.Tensor]] = {}
    try:
        for batch in dataset.batches(batch_size):
            feed = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "labels"}
            for name, value in model(feed).items():
                outs.setdefault(name, []).append(value.detach().float().cpu())
    finally:
        model.train(was_training)
    t = dataset.tensors
    n_tasks = int(t["labels"].shape[1]) if "labels" in t else 0
    return Predictions(
        outputs={k: torch.cat(v).numpy() for k, v in outs.items()},
        labels=t["labels"].float().numpy() if "labels" in t else np.zeros((len(dataset), n_tasks), np.float32),
        scenario=t["scenario"].numpy(),
        user_id=t["user_id"].numpy() if "user_id" in t else None,
    )


def compute_metrics(schema: Schema, preds: Predictions) -> dict[str, Any]:
    """``overall``, ``by_scenario`` and the ``mean_*`` summaries (see the module docstring)."""
    overall: dict[str, Any] = {}
    by_scenario: dict[str, dict[str, Any]] = {s: {} for s in schema.scenarios}
    cell_means: dict[str, list[float]] = {"auc": [], "gauc": [], "logloss": [], "rmse": []}
    auc_positives: list[float] = []
    scen_masks = [preds.scenario == i for i in range(schema.num_scenarios)]
    for j, task in enumerate(schema.tasks):
        y_all = preds.labels[:, j]
        out_all = preds.outputs[task.name]
        known = ~np.isnan(y_all)

        def cell(mask: np.ndarray, task_type: str = task.type, y_all: np.ndarray = y_all,
                 out_all: np.ndarray = out_all) -> dict[str, Any]:
            if task_type == "binary":
                users = preds.user_id[mask] if preds.user_id is not None else None
                return binary_cell(y_all[mask], out_all[mask], users)
            return regression_cell(y_all[mask], out_all[mask])

        overall[task.name] = cell(known)
        for s_name, s_mask in zip(schema.scenarios, scen_masks, strict=True):
            c = cell(known & s_mask)
            by_scenario[s_name][task.name] = c
            for key in ("auc", "gauc", "logloss", "rmse"):
                if c.get(key) is not None:
                    cell_means[key].append(c[key])
            if c.get("auc") is not None:
                auc_positives.append(float(c["positives"]))
    return {
        "mean_auc": _mean(cell_means["auc"]),
        "weighted_auc": weighted_mean(cell_means["auc"], auc_positives),
        "mean_gauc": _mean(cell_means["gauc"]),
        "mean_logloss": _mean(cell_means["logloss"]),
        "mean_rmse": _mean(cell_means["rmse"]),
        "overall": overall,
        "by_scenario": by_scenario,
    }


def monitor_value(metrics: Mapping[str, Any], monitor: str) -> float:
    """The early-stopping score, higher is better: losses and errors are negated; a missing value is -inf."""
    if monitor == "auto":
        monitor = "mean_auc" if metrics.get("mean_auc") is not None else "mean_rmse"
    value = metrics.get(monitor)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return -math.inf
    return -float(value) if monitor in ("mean_logloss", "mean_rmse") else float(value)


def weighted_mean(values: list[float], weights: list[float]) -> float | None:
    """Mean of cell values weighted by their validation positives.

    Why: with many imbalanced scenarios the unweighted mean lets a cell of 20 positives (whose AUC swings
    by ±0.05 between epochs) pick the best epoch or trial; weighting by positives makes each cell count
    in proportion to the evidence it holds, while still keeping scenarios apart (unlike a pooled AUC).
    """
    if not values:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.sum() <= 0:
        return _mean(values)
    return float((np.asarray(values, dtype=np.float64) * w).sum() / w.sum())


def format_table(schema: Schema, metrics: Mapping[str, Any]) -> str:
    """Scenarios × tasks: AUC for binary tasks, RMSE for regression, and the row count of each scenario."""
    heads = [f"{t.name} {'AUC' if t.type == 'binary' else 'RMSE'}" for t in schema.tasks]
    header = ["scenario", "rows", *heads]
    rows: list[list[str]] = []
    sections = [*((s, metrics["by_scenario"][s]) for s in schema.scenarios), ("overall", metrics["overall"])]
    for name, cells in sections:
        first = cells[schema.tasks[0].name] if schema.tasks else {"rows": 0}
        vals = [_fmt(cells[t.name].get("auc" if t.type == "binary" else "rmse")) for t in schema.tasks]
        rows.append([name, str(first["rows"]), *vals])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    summary = [f"mean AUC {_fmt(metrics.get('mean_auc'))}"]
    if metrics.get("mean_gauc") is not None:
        summary.append(f"mean GAUC {_fmt(metrics['mean_gauc'])}")
    if metrics.get("mean_rmse") is not None:
        summary.append(f"mean RMSE {_fmt(metrics['mean_rmse'])}")
    out.append(", ".join(summary))
    return "\n".join(out)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
