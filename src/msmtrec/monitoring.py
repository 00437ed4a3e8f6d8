"""Watching a trained model on new labelled data: metrics, calibration and feature drift per time window.

A multi-scenario model is retrained every day and watched per scenario. :func:`monitor` scores labelled
rows that arrived after training, cut into windows (a day, a week, or the values of any column), and
returns two tables a scheduler can act on:

``cells``   one row per window × scenario × task: rows, positives, AUC, LogLoss (binary) or RMSE
            (regression), mean prediction, mean label and their ratio ``calibration`` (predicted /
            observed; 1 is perfect). The model's own metric code (:func:`~msmtrec.training.metrics.compute_metrics`)
            computes them, so the numbers mean what ``msmtrec evaluate`` means.
``fields``  one row per window × scenario × field: the share of out-of-vocabulary values (categories and
            ids never seen in training) and the population stability index (PSI) of the encoded field
            against the run's own training split.

PSI = Σ_b (p_new,b − p_ref,b) · ln(p_new,b / p_ref,b) over bins fixed on the reference: deciles for dense
fields, the reference's most frequent codes plus an "other" bucket for categorical ones. The usual reading
is < 0.1 stable, 0.1–0.2 moderate, > 0.2 shifted. Proportions are floored at 1e-4 so an empty bin is
finite.

Alerts (:class:`AlertRules`) fire on calibration off by more than a tolerance in a cell with enough positives,
and on PSI above a threshold in a window × scenario with enough rows; small cells are never alerted on,
since their ratios are noise.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from msmtrec.data.dataset import TensorDataset
from msmtrec.data.pipeline import assign_splits, read_and_filter
from msmtrec.data.preprocessor import Preprocessor, line_locator
from msmtrec.data.spec import DatasetSpec, load_spec, spec_from_dict, spec_to_dict
from msmtrec.errors import ConfigError, DataError
from msmtrec.models.base import MultiTaskModel
from msmtrec.tasks import kind_of
from msmtrec.training.metrics import compute_metrics, predict_split

ALL = "(all)"
"""Scenario label of the rows that pool every scenario of a window."""
PSI_FLOOR = 1e-4
DENSE_BINS = 10
TOP_CODES = 20
RAW_SUFFIXES = (".csv", ".gz", ".tsv", ".txt", ".parquet", ".pq")


@dataclass
class AlertRules:
    """When ``msmtrec monitor`` exits non-zero. Defaults follow common practice for CTR models."""

    max_calibration_error: float = 0.2
    """Alert when predicted / observed differs from 1 by more than this (0.2: off by more than 20 %)."""
    min_positives: int = 100
    """A binary cell needs this many positives before its calibration can alert (fewer is noise)."""
    max_psi: float = 0.2
    """Alert when a field's PSI against the training split exceeds this."""
    min_rows: int = 500
    """A window × scenario needs this many rows before its PSI can alert."""


@dataclass
class MonitorResult:
    cells: pd.DataFrame
    fields: pd.DataFrame
    alerts: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ input


def new_data_spec(
    run_spec: DatasetSpec, data: str, window_column: str | None = None, overrides: dict[str, Any] | None = None
) -> DatasetSpec:
    """The spec that reads the new rows: the run's own spec pointed at raw files, or another spec.

    A raw file (or glob) keeps every decision of the run's spec (columns, missing markers, filter) and only
    changes where the rows are, so the new population is the one the model was trained on. The column the
    windows come from is read as the spec's ``split.time_column`` (the reader reads only needed columns).
    """
    overrides = dict(overrides or {})
    if window_column:
        overrides["split.time_column"] = window_column
    if data.lower().endswith(RAW_SUFFIXES) or any(c in data for c in "*?"):
        if set(overrides) - {"split.time_column"}:
            raise ConfigError("--set applies to a spec given as --data; with raw files the run's own spec is used")
        raw = spec_to_dict(run_spec)
        # relative to the working directory, a glob as much as a single file (not to the data root)
        here = Path(data).exists() or bool(glob.glob(data))
        raw["files"] = {**raw["files"], "path": str(Path(data).resolve()) if here else data}
        raw["split"] = {**raw["split"], "method": "random", "time_column": window_column}
        return spec_from_dict(raw, where=f"--data {data}")
    return load_spec(data, overrides or None)


def window_labels(frame: pd.DataFrame, by: str, time_column: str | None) -> pd.Series:
    """One window label per row: ``day`` / ``week`` of a time column, or the values of column ``by``.

    Numeric times above 1e8 are Unix seconds (1e11: milliseconds); smaller numbers are day indices (the
    simulator's ``day``), so ``week`` is ``day // 7``. Text is parsed as dates.
    """
    if by not in ("day", "week"):
        if by not in frame.columns:
            raise ConfigError(f"--by {by}: no such column; columns: {sorted(map(str, frame.columns))[:20]}")
        return frame[by].astype(str)
    if not time_column:
        raise ConfigError(f"--by {by} needs a time column: pass --time-column or set split.time_column in the spec")
    if time_column not in frame.columns:
        raise ConfigError(f"--time-column {time_column}: no such column in the new data")
    raw = frame[time_column]
    numeric = pd.to_numeric(raw, errors="coerce")
    if numeric.notna().all():
        big = float(numeric.abs().max()) if len(numeric) else 0.0
        if big < 1e8:
            day = np.floor(numeric.to_numpy(np.float64)).astype(np.int64)
            return pd.Series(day if by == "day" else day // 7, index=frame.index).map(lambda d: f"{by} {d}")
        stamp = pd.to_datetime(numeric, unit="ms" if big > 1e11 else "s")
    else:
        stamp = pd.to_datetime(raw, errors="coerce")
        if stamp.isna().any():
            i = stamp.index[stamp.isna().to_numpy()][0]
            raise DataError(f"row {i}: time column {time_column!r}: {raw.loc[i]!r} is not a date or a number")
    if by == "day":
        return stamp.dt.strftime("%Y-%m-%d")
    return (stamp - pd.to_timedelta(stamp.dt.weekday, unit="D")).dt.strftime("week of %Y-%m-%d")


# ------------------------------------------------------------------------------------------------- drift


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index between two proportion vectors over the same bins."""
    p = np.maximum(reference, PSI_FLOOR)
    q = np.maximum(current, PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


@dataclass
class FieldBins:
    """How one encoded field is binned, fixed on the reference so every window is compared alike."""

    name: str
    kind: str
    """``categorical`` (codes) or ``dense`` (normalised values)."""
    edges: np.ndarray
    """Dense: inner bin edges; categorical: the codes that get their own bin (the rest share one)."""
    reference: np.ndarray
    """Reference proportions per bin."""

    def proportions(self, values: np.ndarray) -> np.ndarray:
        if self.kind == "dense":
            counts = np.bincount(np.searchsorted(self.edges, values, side="right"), minlength=len(self.edges) + 1)
        else:
            slot = np.searchsorted(self.edges, values)
            own = (slot < len(self.edges)) & (self.edges[np.minimum(slot, len(self.edges) - 1)] == values)
            counts = np.bincount(np.where(own, slot, len(self.edges)), minlength=len(self.edges) + 1)
        return counts / max(int(counts.sum()), 1)


def fit_bins(
    schema_fields: list[str], sparse: np.ndarray, dense_names: list[str], dense: np.ndarray
) -> list[FieldBins]:
    """Bins per field from the reference (training) rows."""
    bins: list[FieldBins] = []
    for j, name in enumerate(schema_fields):
        codes, counts = np.unique(sparse[:, j], return_counts=True)
        top = np.sort(codes[np.argsort(-counts, kind="stable")[:TOP_CODES]])
        b = FieldBins(name, "categorical", top, np.zeros(0))
        b.reference = b.proportions(sparse[:, j])
        bins.append(b)
    for j, name in enumerate(dense_names):
        col = dense[:, j].astype(np.float64)
        edges = np.unique(np.quantile(col, np.linspace(0, 1, DENSE_BINS + 1)[1:-1])) if len(col) else np.zeros(0)
        b = FieldBins(name, "dense", edges, np.zeros(0))
        b.reference = b.proportions(col)
        bins.append(b)
    return bins


# ------------------------------------------------------------------------------------------------- monitor


def reference_rows(pre: Preprocessor) -> pd.DataFrame:
    """The run's own training split, re-read with the run's spec (the baseline for drift)."""
    raw = read_and_filter(pre.spec)
    split = assign_splits(raw.frame, pre.spec, line_locator(raw.frame, raw.files))
    return raw.frame[split == "train"]


def monitor(
    model: MultiTaskModel,
    pre: Preprocessor,
    frame: pd.DataFrame,
    windows: pd.Series,
    reference: pd.DataFrame,
    rules: AlertRules | None = None,
    batch_size: int = 8192,
    progress: Callable[[str], None] | None = None,
) -> MonitorResult:
    """Score ``frame`` window by window; compare each window's features with ``reference``."""
    rules = rules or AlertRules()
    ref_batch, _ = pre.transform(reference, with_labels=False)
    schema = model.schema
    sparse_names = [f.name for f in schema.sparse]
    bins = fit_bins(sparse_names, ref_batch["sparse"].numpy(), list(schema.dense), ref_batch["dense"].numpy())
    cell_rows: list[dict[str, Any]] = []
    field_rows: list[dict[str, Any]] = []
    for label in _ordered(windows.unique()):
        part = frame[(windows == label).to_numpy()]
        if progress:
            progress(f"window {label}: {len(part):,} rows")
        batch, report = pre.transform(part, with_labels=True)
        preds = predict_split(model, TensorDataset(batch), batch_size)
        cell_rows += _cell_rows(label, schema, compute_metrics(schema, preds, model.output_mapping))
        field_rows += _field_rows(label, schema, batch, report.oov, bins)
    cells, fields = pd.DataFrame(cell_rows), pd.DataFrame(field_rows)
    return MonitorResult(cells, fields, alerts(cells, fields, rules))


def _ordered(values: Iterable[Any]) -> list[Any]:
    """Windows in natural order ("day 2" before "day 10")."""
    import re

    def key(v: Any) -> tuple:
        return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(v)))

    return sorted(values, key=key)


def _cell_rows(window: str, schema: Any, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    groups = [(ALL, metrics["overall"]), *metrics["by_scenario"].items()]
    for scenario, cells in groups:
        for task in schema.tasks:
            c = cells.get(task.name) or {}
            pred, obs = c.get("pred_mean"), c.get("label_mean")
            rows.append({
                "window": window, "scenario": scenario, "task": task.name, "type": task.type,
                "probability": kind_of(task).probability,
                "rows": c.get("rows", 0), "positives": c.get("positives"),
                "auc": c.get("auc"), "logloss": c.get("logloss"), "rmse": c.get("rmse"),
                "pred_mean": pred, "label_mean": obs,
                "calibration": pred / obs if pred is not None and obs else None,
            })
    return rows


def _field_rows(
    window: str, schema: Any, batch: dict[str, torch.Tensor], oov: dict[str, int], bins: list[FieldBins]
) -> list[dict[str, Any]]:
    scen = batch["scenario"].numpy()
    sparse, dense = batch["sparse"].numpy(), batch["dense"].numpy().astype(np.float64)
    groups = [(ALL, np.ones(len(scen), bool))]
    groups += [(name, scen == i) for i, name in enumerate(schema.scenarios) if (scen == i).any()]
    n_sparse = len(schema.sparse)
    rows = []
    for scenario, mask in groups:
        n = int(mask.sum())
        for j, b in enumerate(bins):
            values = sparse[mask, j] if b.kind == "categorical" else dense[mask, j - n_sparse]
            unseen = int((values == 0).sum()) if b.kind == "categorical" else None
            rows.append({
                "window": window, "scenario": scenario, "field": b.name, "kind": b.kind, "rows": n,
                "oov_share": unseen / n if unseen is not None and n else None,
                "psi": psi(b.reference, b.proportions(values)) if n else None,
            })
    return rows


def alerts(cells: pd.DataFrame, fields: pd.DataFrame, rules: AlertRules) -> list[str]:
    """One line per alert, worst first within each kind."""
    out: list[str] = []
    binary = cells[cells["probability"].astype(bool) & cells["calibration"].notna()]
    big = binary[binary["positives"].fillna(0) >= rules.min_positives]
    off = big[(big["calibration"] - 1.0).abs() > rules.max_calibration_error]
    for r in off.assign(err=(off["calibration"] - 1.0).abs()).sort_values("err", ascending=False).itertuples():
        out.append(f"calibration: {r.window} / {r.scenario} / {r.task}: predicted/observed = {r.calibration:.2f} "
                   f"(beyond ±{rules.max_calibration_error:.0%}; {int(r.positives)} positives)")
    drift = fields[(fields["rows"] >= rules.min_rows) & (fields["psi"].fillna(0) > rules.max_psi)]
    for r in drift.sort_values("psi", ascending=False).itertuples():
        out.append(f"drift: {r.window} / {r.scenario} / {r.field}: PSI {r.psi:.3f} > {rules.max_psi} ({r.rows} rows)")
    return out


# ------------------------------------------------------------------------------------------------ outputs


def write_outputs(result: MonitorResult, out: Path) -> list[Path]:
    """``cells.csv``, ``fields.csv``, their Parquet twins, ``alerts.txt`` and one PNG per scenario."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in (("cells", result.cells), ("fields", result.fields)):
        table.to_csv(out / f"{name}.csv", index=False)
        table.to_parquet(out / f"{name}.parquet", index=False)
        written += [out / f"{name}.csv", out / f"{name}.parquet"]
    (out / "alerts.txt").write_text("".join(f"{a}\n" for a in result.alerts))
    written.append(out / "alerts.txt")
    written += plot_trends(result, out / "plots")
    return written


def plot_trends(result: MonitorResult, out: Path) -> list[Path]:
    """Per scenario: AUC and calibration by window per binary task, and the largest PSI of any field."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    windows = list(dict.fromkeys(result.cells["window"]))
    x = np.arange(len(windows))
    for scenario in dict.fromkeys(result.cells["scenario"]):
        cells = result.cells[(result.cells["scenario"] == scenario) & result.cells["probability"].astype(bool)]
        fields = result.fields[result.fields["scenario"] == scenario]
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
        for task, part in cells.groupby("task", sort=False):
            at = part.set_index("window").reindex(windows)
            axes[0].plot(x, at["auc"].astype(float), marker="o", label=task)
            axes[1].plot(x, at["calibration"].astype(float), marker="o", label=task)
        worst = fields.groupby("window", sort=False)["psi"].max().reindex(windows)
        axes[2].bar(x, worst.astype(float).fillna(0.0), color="tab:gray")
        axes[1].axhline(1.0, color="black", lw=0.8)
        axes[2].axhline(0.2, color="tab:red", lw=0.8, ls="--", label="0.2: shifted")
        for ax, title in zip(axes, ("AUC", "calibration (predicted / observed)", "largest field PSI"), strict=True):
            ax.set_title(title)
            ax.set_xticks(x, windows, rotation=45, ha="right", fontsize=7)
            ax.legend(fontsize=7)
        fig.suptitle(f"scenario {scenario}")
        fig.tight_layout()
        path = out / f"{_safe(str(scenario))}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_") or "all"


def summary(result: MonitorResult) -> str:
    """What ``msmtrec monitor`` prints: a table per window of the pooled cells, then the alerts."""
    from msmtrec.report import format_table

    pooled = result.cells[result.cells["scenario"] == ALL]
    rows = []
    for r in pooled.itertuples():
        metric = r.auc if r.probability else r.rmse
        rows.append([r.window, r.task, f"{r.rows:,}", _f(metric), _f(r.calibration)])
    worst = result.fields[result.fields["scenario"] == ALL].groupby("window", sort=False)["psi"].max()
    lines = [format_table(["window", "task", "rows", "AUC / RMSE", "pred/obs"], rows), "",
             "largest PSI per window: " + ", ".join(f"{w} {_f(v)}" for w, v in worst.items())]
    lines.append(f"{len(result.alerts)} alert(s)" + (":" if result.alerts else ""))
    lines += [f"  {a}" for a in result.alerts[:20]]
    if len(result.alerts) > 20:
        lines.append(f"  … and {len(result.alerts) - 20} more in alerts.txt")
    return "\n".join(lines)


def _f(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.4f}"

