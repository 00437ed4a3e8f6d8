"""Training and validation curves of a run folder as PNG files (``msmtrec plot RUN_DIR``).

Reads ``history.csv`` (one row per epoch, written by the trainer) and, when the run has them, the
per-step training losses from its TensorBoard event files. Writes:

``loss.png``          training loss per task and total per epoch (and per step when event files exist),
                      with the validation monitor and the best epoch marked
``valid_{task}.png``  one panel per metric of the task (AUC, GAUC, log loss; or RMSE, MAE), one line per
                      scenario plus the pooled ``overall`` line

Needs no display: matplotlib's Agg backend, imported only here.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from msmtrec.errors import MsmtrecError

HISTORY = "history.csv"


def read_history(run_dir: Path) -> list[dict[str, float | None]]:
    """``history.csv`` as rows of floats (``None`` for blank cells)."""
    path = run_dir / HISTORY
    if not path.exists():
        raise MsmtrecError(f"{run_dir}: no {HISTORY}; plot a folder written by `msmtrec train` (after one epoch)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise MsmtrecError(f"{path}: no epochs recorded yet")
    return [{k: _number(v) for k, v in row.items()} for row in rows]


def _number(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def step_losses(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Per-step ``train/loss/*`` scalars from the run's TensorBoard files (empty when there are none)."""
    tb = run_dir / "tensorboard"
    if not tb.is_dir():
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    acc.Reload()
    out: dict[str, list[tuple[int, float]]] = {}
    for tag in acc.Tags().get("scalars", []):
        if tag.startswith("train/loss/"):
            pairs = {e.step: e.value for e in acc.Scalars(tag)}  # a resumed run may repeat steps: keep the last
            out[tag.removeprefix("train/loss/")] = sorted(pairs.items())
    return out


def metric_columns(history: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, str]]]:
    """``{task: {metric: {scenario or "overall": column}}}`` for the validation columns of ``history``."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for col in history[0]:
        parts = col.split("/")
        if parts[0] != "valid" or len(parts) not in (3, 4):  # valid/monitor, valid/mean_auc: summaries
            continue
        if len(parts) == 3:  # valid/{task}/{metric}: all scenarios pooled
            where, task, metric = "overall", parts[1], parts[2]
        else:  # valid/{scenario}/{task}/{metric}
            where, task, metric = parts[1], parts[2], parts[3]
        out.setdefault(task, {}).setdefault(metric, {})[where] = col
    return out


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write the run's curves as PNGs into ``out_dir`` (default ``RUN_DIR/plots``); returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    history = read_history(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    epochs = [int(r["epoch"] or 0) for r in history]  # history.csv counts epochs from 1
    written = [_plot_loss(plt, run_dir, history, epochs, out / "loss.png")]
    for task, metrics in metric_columns(history).items():
        written.append(_plot_task(plt, task, metrics, history, epochs, out / f"valid_{_safe(task)}.png"))
    return written


def _series(history: list[dict[str, Any]], col: str) -> list[float]:
    return [math.nan if r.get(col) is None else float(r[col]) for r in history]


def _locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator


def _plot_loss(plt: Any, run_dir: Path, history: list[dict[str, Any]], epochs: list[int], path: Path) -> Path:
    MaxNLocator = _locator()  # noqa: N806
    steps = step_losses(run_dir)
    panels = 3 if steps else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4), squeeze=False)
    ax = axes[0][0]
    for col in [c for c in history[0] if c == "train_loss" or c.startswith("train_loss/")]:
        label = "total" if col == "train_loss" else col.split("/", 1)[1]
        ax.plot(epochs, _series(history, col), marker="o", label=label, lw=2.2 if label == "total" else 1.4)
    ax.set(title="training loss per epoch", xlabel="epoch", ylabel="loss")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    monitor = _series(history, "valid/monitor")
    ax.plot(epochs, monitor, marker="o", color="tab:green")
    finite = [(v, e) for v, e in zip(monitor, epochs, strict=True) if not math.isnan(v)]
    if finite:
        best, at = max(finite)
        ax.axvline(at, color="grey", ls="--", lw=1)
        ax.annotate(f"best {best:.4f} (epoch {at})", (at, best), textcoords="offset points", xytext=(4, -12),
                    fontsize=8)
    ax.set(title="validation monitor (higher is better)", xlabel="epoch", ylabel="monitor")
    if steps:
        ax = axes[0][2]
        for name, pairs in steps.items():
            ax.plot([s for s, _ in pairs], [v for _, v in pairs], label=name, lw=2.0 if name == "total" else 1.0)
        ax.set(title="training loss per step (TensorBoard)", xlabel="optimiser step", ylabel="loss")
        ax.legend(fontsize=8)
    for a in axes[0]:
        a.grid(alpha=0.3)
    for a in axes[0][:2]:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_task(plt: Any, task: str, metrics: dict[str, dict[str, str]], history: list[dict[str, Any]],
               epochs: list[int], path: Path) -> Path:
    MaxNLocator = _locator()  # noqa: N806
    names = list(metrics)  # the task kind's history keys, in its order
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4), squeeze=False)
    for ax, metric in zip(axes[0], names, strict=True):
        for where, col in sorted(metrics[metric].items(), key=lambda kv: (kv[0] == "overall", kv[0])):
            values = _series(history, col)
            if all(math.isnan(v) for v in values):
                continue  # e.g. GAUC without user ids, AUC of a one-class scenario
            overall = where == "overall"
            ax.plot(epochs, values, marker="o", label=where, color="black" if overall else None,
                    lw=2.4 if overall else 1.3, ls="--" if overall else "-")
        ax.set(title=f"{task}: validation {metric} ({_better(metric)})", xlabel="epoch", ylabel=metric)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "n/a (no values)", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _better(metric: str) -> str:
    if metric.endswith("auc"):
        return "higher is better"
    if metric.endswith("ratio"):
        return "best at 1"
    return "lower is better"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
