"""PNG figures of a results folder (matplotlib, Agg backend so it runs headless in CI).

Per dataset: ``auc_<ds>.png`` (AUC per scenario per model, error bars = std over seeds),
``transfer_<ds>.png`` (the change-vs-single-task heat map of ``seesaw.md``), and from HEF's ``explain``
weights averaged over the test rows of each scenario (and over seeds): ``hef_mixing_<ds>.png`` (shared /
scenario / task mixing weights per scenario and task), ``hef_gates_<ds>.png`` (every gate, scenario ×
expert) and ``hef_attention_<ds>.png`` (field × field self-attention, labelled with the schema's fields).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from msmtrec.evaluation.report import ALL, REFERENCE, Results, cell_values, summarise, transfer


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(res: Results, out: Path) -> list[Path]:
    written: list[Path] = []
    for ds in res.datasets:
        written += [p for p in (auc_bars(res, ds, out), transfer_heatmap(res, ds, out)) if p]
        written += explain_plots(ds, out)
    return written


def auc_bars(res: Results, ds: str, out: Path) -> Path | None:
    """One panel per binary task: scenarios on x, one bar per model, error bars = std over seeds."""
    df = res.of(ds)
    models = res.models(ds, ("model", "peer"))
    values = cell_values(df[df["model"].isin(models)], "auc")
    if values.empty:
        return None
    mean, std, _ = summarise(values)
    tasks = list(dict.fromkeys(t for _, t in values.columns))
    scenarios = list(dict.fromkeys(s for s, _ in values.columns if s != ALL))
    rows = [m for m in models if m in mean.index]
    plt = _plt()
    fig, axes = plt.subplots(len(tasks), 1, figsize=(max(8, 1.1 * len(scenarios) * len(rows) / 3), 3.6 * len(tasks)),
                             squeeze=False)
    width = 0.8 / len(rows)
    cmap = plt.get_cmap("tab20")
    for ax, task in zip(axes[:, 0], tasks, strict=True):
        x = np.arange(len(scenarios))
        for i, m in enumerate(rows):
            cols = [(s, task) for s in scenarios]
            mu = np.array([mean.at[m, c] if c in mean.columns else np.nan for c in cols], dtype=float)
            sd = np.array([std.at[m, c] if c in std.columns else np.nan for c in cols], dtype=float)
            ax.bar(x + (i - (len(rows) - 1) / 2) * width, mu, width, yerr=sd, capsize=2, label=m,
                   color=cmap(i % 20), hatch="//" if res.kinds.get(m) == "peer" else None)
        finite = mean[[c for c in mean.columns if c[1] == task]].to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        if finite.size:
            ax.set_ylim(max(0.0, finite.min() - 0.03), min(1.0, finite.max() + 0.02))
        ax.set_xticks(x, scenarios)
        ax.set_ylabel("test AUC")
        ax.set_title(f"{ds}: {task}")
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    path = out / f"auc_{ds}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def transfer_heatmap(res: Results, ds: str, out: Path) -> Path | None:
    """Models × cells, colour = paired change against single_task (positive = better), 0 at the centre."""
    models = [m for m in res.models(ds, ("model", "peer")) if m != REFERENCE]
    mean, _, cols = transfer(res.of(ds), models)
    if mean.empty:
        return None
    data = mean[cols].to_numpy(dtype=float)
    lim = np.nanmax(np.abs(data)) if np.isfinite(data).any() else 1.0
    lim = lim if lim > 0 else 1.0
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 3, 0.45 * len(mean.index) + 2))
    im = ax.imshow(np.ma.masked_invalid(data), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(cols)), [f"{s}\n{t}" for s, t in cols], fontsize=7, rotation=30, ha="right")
    ax.set_yticks(range(len(mean.index)), list(mean.index), fontsize=8)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if np.isfinite(data[i, j]):
                ax.text(j, i, f"{data[i, j]:+.3f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, label="Δ vs single_task (AUC gain / RMSE drop)")
    ax.set_title(f"{ds}: change against single_task (blue = better)")
    fig.tight_layout()
    path = out / f"transfer_{ds}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load_explain(ds: str, out: Path) -> dict[str, Any] | None:
    """HEF's per-scenario explain weights for ``ds``, averaged over the seeds that wrote one."""
    files = sorted((out / "explain").glob(f"{ds}__hef__seed*.json"))
    if not files:
        return None
    parts = [json.loads(p.read_text()) for p in files]
    first = parts[0]
    weights = {k: np.mean([np.asarray(p["weights"][k]) for p in parts], axis=0) for k in first["weights"]}
    att = None
    if first.get("attention") is not None:
        att = np.mean([np.asarray(p["attention"]) for p in parts], axis=0)
    return {**first, "weights": weights, "attention": att, "seeds": len(parts)}


def explain_plots(ds: str, out: Path) -> list[Path]:
    ex = load_explain(ds, out)
    if ex is None:
        return []
    plt = _plt()
    written = []
    scen = ex["scenarios"]
    mixing = {k.split("/", 1)[1]: v for k, v in ex["weights"].items() if k.startswith("mixing/")}
    if mixing:
        fig, axes = plt.subplots(1, len(mixing), figsize=(4 * len(mixing), 0.5 * len(scen) + 2), squeeze=False)
        parts = ("shared", "scenario", "task")
        colors = ("#4c72b0", "#dd8452", "#55a868")
        for ax, (task, w) in zip(axes[0], mixing.items(), strict=True):
            left = np.zeros(len(scen))
            for j, (name, c) in enumerate(zip(parts, colors, strict=True)):
                ax.barh(range(len(scen)), w[:, j], left=left, color=c, label=name)
                left += w[:, j]
            ax.set_yticks(range(len(scen)), scen, fontsize=8)
            ax.set_xlim(0, 1)
            ax.set_title(f"mixing for {task}")
        axes[0, 0].legend(fontsize=7, loc="lower left")
        fig.suptitle(f"{ds}: HEF mixing weights (mean over test rows of each scenario, {ex['seeds']} seed(s))")
        fig.tight_layout()
        path = out / f"hef_mixing_{ds}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    gates = {k: v for k, v in ex["weights"].items() if k.startswith("gates/")}
    if gates:
        n = len(gates)
        ncol = min(n, 4)
        nrow = (n + ncol - 1) // ncol
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 0.45 * len(scen) * nrow + 1.6 * nrow), squeeze=False)
        for ax in axes.flat[n:]:
            ax.axis("off")
        for ax, (key, w) in zip(axes.flat, gates.items(), strict=False):
            ax.imshow(w, cmap="viridis", vmin=0, vmax=max(float(w.max()), 1e-9), aspect="auto")
            ax.set_yticks(range(len(scen)), scen, fontsize=7)
            ax.set_xticks(range(w.shape[1]), [str(i) for i in range(w.shape[1])], fontsize=7)
            ax.set_xlabel("expert", fontsize=7)
            ax.set_title(key.removeprefix("gates/"), fontsize=8)
            for i in range(w.shape[0]):
                for j in range(w.shape[1]):
                    ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w")
        fig.suptitle(f"{ds}: HEF gate weights per scenario (mean over test rows)")
        fig.tight_layout()
        path = out / f"hef_gates_{ds}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    att = ex.get("attention")
    if att is not None:
        fields = ex["fields"]
        size = max(5.0, 0.28 * len(fields) + 2)
        fig, ax = plt.subplots(figsize=(size + 1, size))
        im = ax.imshow(att, cmap="magma")
        ax.set_xticks(range(len(fields)), fields, rotation=90, fontsize=7)
        ax.set_yticks(range(len(fields)), fields, fontsize=7)
        ax.set_xlabel("attended field (key)")
        ax.set_ylabel("attending field (query)")
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(f"{ds}: HEF self-attention (mean over test rows and heads)")
        fig.tight_layout()
        path = out / f"hef_attention_{ds}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
