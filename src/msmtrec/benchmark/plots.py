"""PNG figures of a results folder (matplotlib, Agg backend so it runs headless in CI).

Per dataset: ``avg_auc_<ds>.png`` (every model ranked by its average test AUC, each seed a point: the figure
to look at first), ``auc_<ds>.png`` (AUC per scenario per model, error bars = std over seeds),
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
import pandas as pd

from msmtrec.benchmark.report import (
    ALL,
    FLAGSHIP,
    REFERENCE,
    WAVG,
    Results,
    cell_values,
    summarise,
    table_values,
    transfer,
)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(res: Results, out: Path) -> list[Path]:
    written: list[Path] = []
    for ds in res.datasets:
        figures = (average_auc_plot(res, ds, out), auc_bars(res, ds, out), transfer_heatmap(res, ds, out))
        written += [p for p in figures if p]
        written += explain_plots(ds, out)
    return written


AUC_BASELINE = 0.5
"""Where AUC bars start: chance level, so a bar's length is the ranking skill above a coin flip (stated on the
axis). Starting at 0 would flatten every difference; starting at the smallest bar would exaggerate them."""


def text_color(rgba: Any) -> str:
    """Black or white, whichever reads better on a cell of colour ``rgba`` (relative luminance, WCAG)."""
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3])
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.179 else "white"


def ranked_averages(res: Results, ds: str) -> dict[str, pd.DataFrame]:
    """Per-seed average test AUC of every model and peer (no ablation rows), one frame per average (``avg``
    and, where the cells' positives are known, the positives-weighted one), rows ordered best mean first.

    Ordering by test score is presentation only: nothing is chosen from it."""
    df = res.of(ds)
    models = res.models(ds, ("model", "peer"))
    values = table_values(df[df["model"].isin(models)], "auc")
    if values.empty:
        return {}
    ranked: dict[str, pd.DataFrame] = {}
    for col, label in ((("avg", ""), "average over cells"), ((WAVG, ""), "positives-weighted average")):
        if col not in values.columns:
            continue
        per_seed = values[col].dropna().unstack("seed")
        order = per_seed.mean(axis=1).sort_values(ascending=False).index
        ranked[label] = per_seed.loc[order]
    return ranked


def average_auc_plot(res: Results, ds: str, out: Path) -> Path | None:
    """One row per model, best first: dot = mean over seeds, bar = ± std, small points = single seeds; the
    flagship in red, torch-rechub rows in grey, a dashed line at the best mean. Each average gets a panel."""
    ranked = ranked_averages(res, ds)
    if not ranked:
        return None
    plt = _plt()
    n = max(len(f) for f in ranked.values())
    fig, axes = plt.subplots(1, len(ranked), figsize=(6 * len(ranked), 0.3 * n + 1.6), squeeze=False)
    for ax, (label, per_seed) in zip(axes[0], ranked.items(), strict=True):
        mean, std = per_seed.mean(axis=1), per_seed.std(axis=1, ddof=1).fillna(0.0)
        y = np.arange(len(per_seed))[::-1]
        for yi, m in zip(y, per_seed.index, strict=True):
            color = "tab:red" if m == FLAGSHIP else ("0.55" if res.kinds.get(m) == "peer" else "tab:blue")
            seeds = per_seed.loc[m].dropna().to_numpy(dtype=float)
            ax.scatter(seeds, np.full(len(seeds), yi), s=9, color=color, alpha=0.35, linewidths=0)
            ax.errorbar(mean[m], yi, xerr=std[m], fmt="o", color=color, markersize=5, capsize=2)
        ax.axvline(float(mean.iloc[0]), color="black", linestyle="--", linewidth=0.7)
        ax.set_yticks(y, list(per_seed.index), fontsize=8)
        ax.locator_params(axis="x", nbins=5)  # close AUCs need 4-5 digits per tick: fewer ticks stay legible
        ax.set_xlabel(f"test AUC, {label}")
        ax.grid(axis="x", alpha=0.3)
    seeds = max(f.shape[1] for f in ranked.values())
    fig.suptitle(f"{ds}: models ranked by test AUC (up to {seeds} seed(s); dot = mean, bar = ± std, "
                 f"points = seeds; red = {FLAGSHIP}, grey = torch-rechub)", fontsize=9)
    fig.tight_layout()
    path = out / f"avg_auc_{ds}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def auc_bars(res: Results, ds: str, out: Path) -> Path | None:
    """One panel per binary task: scenarios on x, one bar per model from the stated baseline, error bars =
    std over seeds, "n/a" where a model has no value for a cell."""
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
    base = AUC_BASELINE
    for ax, task in zip(axes[:, 0], tasks, strict=True):
        x = np.arange(len(scenarios))
        finite = mean[[c for c in mean.columns if c[1] == task]].to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        top = min(1.0, max(float(finite.max()) if finite.size else base + 0.1, base + 0.02) + 0.02)
        low = min(base, float(finite.min()) - 0.02) if finite.size else base  # a below-chance bar stays visible
        for i, m in enumerate(rows):
            cols = [(s, task) for s in scenarios]
            mu = np.array([mean.at[m, c] if c in mean.columns else np.nan for c in cols], dtype=float)
            sd = np.array([std.at[m, c] if c in std.columns else np.nan for c in cols], dtype=float)
            pos = x + (i - (len(rows) - 1) / 2) * width
            ax.bar(pos, mu - base, width, bottom=base, yerr=sd, capsize=2, label=m,
                   color=cmap(i % 20), hatch="//" if res.kinds.get(m) == "peer" else None)
            for xp in pos[~np.isfinite(mu)]:
                ax.text(xp, base + 0.01 * (top - low), "n/a", rotation=90, ha="center", va="bottom", fontsize=6)
        ax.axhline(base, color="black", linewidth=0.8)
        ax.set_ylim(low, top)
        ax.set_xticks(x, scenarios)
        ax.set_ylabel(f"test AUC (bars start at {base}, chance)")
        ax.set_title(f"{ds}: {task}")
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    path = out / f"auc_{ds}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def transfer_heatmap(res: Results, ds: str, out: Path) -> Path | None:
    """Models × cells, colour = paired change against single_task (positive = better), 0 at the centre.

    AUC gains and RMSE drops are different units, so they get separate panels, each with its own symmetric
    colour scale and colour bar; a cell without data says "n/a".
    """
    models = [m for m in res.models(ds, ("model", "peer")) if m != REFERENCE]
    mean, _, cols = transfer(res.of(ds), models)
    if mean.empty:
        return None
    df = res.of(ds)
    rmse_cols = {c for c in cols if _is_rmse_cell(df, c)}
    groups = [(g, lab) for g, lab in (([c for c in cols if c not in rmse_cols], "AUC gain"),
                                      ([c for c in cols if c in rmse_cols], "RMSE drop")) if g]
    plt = _plt()
    widths = [len(g) for g, _ in groups]
    fig, axes = plt.subplots(1, len(groups), figsize=(1.3 * len(cols) + 3.5 * len(groups),
                                                      0.45 * len(mean.index) + 2.2),
                             squeeze=False, gridspec_kw={"width_ratios": widths})
    cmap = plt.get_cmap("RdBu")
    for k, (ax, (group, label)) in enumerate(zip(axes[0], groups, strict=True)):
        data = mean[group].to_numpy(dtype=float)
        lim = float(np.nanmax(np.abs(data))) if np.isfinite(data).any() else 1.0
        lim = lim if lim > 0 else 1.0
        im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(group)), [f"{s}\n{t}" for s, t in group], fontsize=7, rotation=30, ha="right")
        ax.set_yticks(range(len(mean.index)), list(mean.index) if k == 0 else [""] * len(mean.index), fontsize=8)
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                v = data[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{v:+.3f}", ha="center", va="center", fontsize=6,
                            color=text_color(cmap((v + lim) / (2 * lim))))
                else:
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=6, color="black")
        fig.colorbar(im, ax=ax, label=f"{label} vs single_task")
        ax.set_title(label, fontsize=9)
    fig.suptitle(f"{ds}: change against single_task, paired by seed (blue = better, own scale per unit)")
    fig.tight_layout()
    path = out / f"transfer_{ds}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _is_rmse_cell(df: Any, col: tuple[str, str]) -> bool:
    scen, task = col
    sub = df[(df["scenario"] == scen) & (df["task"] == task)]
    return bool((sub["metric"] == "rmse").any())


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
    """HEF's mixing, gate and attention plots for ``ds``; a plot of a part the saved explain files no longer
    have (the part is off in today's runs) is deleted, so a folder never shows a figure of an earlier model."""
    written = _explain_plots(ds, out)
    for kind in ("mixing", "gates", "attention"):
        stale = out / f"hef_{kind}_{ds}.png"
        if stale.exists() and stale not in written:
            stale.unlink()
    return written


def _explain_plots(ds: str, out: Path) -> list[Path]:
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
        cmap = plt.get_cmap("viridis")
        for ax, (key, w) in zip(axes.flat, gates.items(), strict=False):
            im = ax.imshow(w, cmap=cmap, vmin=0, vmax=1, aspect="auto")
            ax.set_yticks(range(len(scen)), scen, fontsize=7)
            ax.set_xticks(range(w.shape[1]), [str(i) for i in range(w.shape[1])], fontsize=7)
            ax.set_xlabel("expert", fontsize=7)
            ax.set_title(key.removeprefix("gates/"), fontsize=8)
            for i in range(w.shape[0]):
                for j in range(w.shape[1]):
                    ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color=text_color(cmap(float(w[i, j]))))
            fig.colorbar(im, ax=ax, fraction=0.046)
        fig.suptitle(f"{ds}: HEF gate weights per scenario (mean over test rows; colour scale 0-1)")
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
