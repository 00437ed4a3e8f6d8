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
      "best_epoch": 3,                 # epoch whose weights were kept (1-based, as printed and in history.csv)
      "epochs": 5,                     # epochs trained
      "world_size": 1,                 # training processes (torchrun --nproc_per_node)
      "mean_auc": 0.71,                # mean AUC over scenario × binary-task cells with both classes
      "weighted_auc": 0.70,            # same cells, each weighted by its positives (small cells cannot dominate)
      "mean_gauc": 0.65,               # same for GAUC (null when the data has no user id)
      "mean_rmse": null,               # mean RMSE over scenario × regression-task cells (null if none)
      "overall": {TASK: CELL, ...},    # every scenario pooled
      "by_scenario": {SCENARIO: {TASK: CELL, ...}, ...}
    }

Each CELL comes from the task's kind (:mod:`msmtrec.tasks`). A binary-task CELL is ``{"rows", "positives",
"auc", "gauc", "logloss", "pred_mean", "label_mean", "calibration", "ece"}``: ``auc``/``gauc``/``logloss``
score the model's raw logits, ``pred_mean`` (mean probability), ``calibration`` (pred_mean / label_mean)
and ``ece`` (expected calibration error, 10 equal-mass bins) the probabilities a user receives (after the
run's calibrator, if any). A regression-task CELL is ``{"rows", "rmse", "mae", "pred_mean", "label_mean",
"pred_mean_units", "label_mean_units", "mean_ratio", "mean_ratio_low", "mean_ratio_high"}``: rmse/mae/
pred_mean/label_mean in the (transformed) target space, the ``*_units`` means and their ``mean_ratio`` in
original units after the run's bias correction, with the ratio's 95 % interval over test sets of this
size. A ``ziln`` CELL is ``{"rows", "positives", "rmse", "mae", "buy_auc", "pred_mean_units",
"label_mean_units", "mean_ratio", "mean_ratio_low", "mean_ratio_high"}``, all in original units. ``auc``
is null when the cell holds a single class; ``gauc`` (impression-weighted mean of per-user AUC over users
with both classes) is null when there is no ``user_id`` or no user has both classes. Rows whose label is
NaN are left out of that task. Cells of scenarios with no rows report ``rows: 0`` and null values.
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
from msmtrec.tasks import OutputMapping, kind_of
from msmtrec.tasks.binary import binary_cell
from msmtrec.tasks.regression import regression_cell
from msmtrec.tasks.scores import auc, expected_calibration_error, gauc

__all__ = [
    "Predictions",
    "auc",
    "binary_cell",
    "compute_metrics",
    "expected_calibration_error",
    "format_table",
    "gauc",
    "monitor_value",
    "predict_split",
    "regression_cell",
]


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


def compute_metrics(schema: Schema, preds: Predictions, mapping: OutputMapping | None = None) -> dict[str, Any]:
    """``overall``, ``by_scenario`` and the ``mean_*`` summaries (see the module docstring).

    Each cell comes from the task's kind, which sees the labels, the raw outputs and the outputs in user
    units (mapped by ``mapping``, default the identity mapping: sigmoid / expm1).
    """
    mapping = mapping or OutputMapping.identity(schema)
    units_all = mapping.apply_numpy(preds.outputs, preds.scenario)
    overall: dict[str, Any] = {}
    by_scenario: dict[str, dict[str, Any]] = {s: {} for s in schema.scenarios}
    cell_means: dict[str, list[float]] = {"auc": [], "gauc": [], "logloss": [], "rmse": []}
    auc_positives: list[float] = []
    scen_masks = [preds.scenario == i for i in range(schema.num_scenarios)]
    for j, task in enumerate(schema.tasks):
        kind = kind_of(task)
        y_all = preds.labels[:, j]
        out_all = preds.outputs[task.name]
        units = units_all[task.name]
        known = ~np.isnan(y_all)

        def cell(mask: np.ndarray, y_all: np.ndarray = y_all, out_all: np.ndarray = out_all,
                 units: np.ndarray = units, kind: Any = kind, transform: str = task.transform) -> dict[str, Any]:
            users = preds.user_id[mask] if preds.user_id is not None else None
            return kind.cell(y_all[mask], out_all[mask], units[mask], users, transform)

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
    """Scenarios × tasks: each task's headline metric (AUC, RMSE) and its calibration in user units.

    A probability task shows ``cal`` (mean predicted / observed rate) and ``ECE``; a value task shows
    ``ratio`` (mean prediction / mean label in original units). 1.0 means calibrated on average.
    """
    columns: list[tuple[str, str, str]] = []  # (header, task, cell key)
    for t in schema.tasks:
        kind = kind_of(t)
        columns.append((f"{t.name} {kind.headline.upper()}", t.name, kind.headline))
        if kind.probability:
            columns += [(f"{t.name} cal", t.name, "calibration"), (f"{t.name} ECE", t.name, "ece")]
        else:
            columns += [(f"{t.name} ratio", t.name, "mean_ratio"), (f"{t.name} ratio 95% CI", t.name, "ratio_ci")]
    from msmtrec.report import format_table as aligned

    header = ["scenario", "rows", *(c[0] for c in columns)]
    rows: list[list[Any]] = []
    sections = [*((s, metrics["by_scenario"][s]) for s in schema.scenarios), ("overall", metrics["overall"])]
    for name, cells in sections:
        first = cells[schema.tasks[0].name] if schema.tasks else {"rows": 0}
        rows.append([name, int(first["rows"]), *(_cell_text(cells[task], key) for _, task, key in columns)])
    out = [aligned(header, rows)]
    summary = [f"mean AUC {_fmt(metrics.get('mean_auc'))}"]
    if metrics.get("mean_gauc") is not None:
        summary.append(f"mean GAUC {_fmt(metrics['mean_gauc'])}")
    if metrics.get("mean_rmse") is not None:
        summary.append(f"mean RMSE {_fmt(metrics['mean_rmse'])}")
    out.append(", ".join(summary))
    return "\n".join(out)


def _cell_text(cell: Mapping[str, Any], key: str) -> Any:
    """A cell's value for the table; ``ratio_ci`` is the ratio's interval written ``low–high``."""
    if key != "ratio_ci":
        return cell.get(key)
    low, high = cell.get("mean_ratio_low"), cell.get("mean_ratio_high")
    return "-" if low is None or high is None else f"{low:.2f}–{high:.2f}"


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
