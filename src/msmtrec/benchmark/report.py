"""Markdown reports from ``results.csv``: summary, seesaw, ablation and cost tables, plus the target checks.

Everything here is computed from the results file (and the ``suite.json`` / ``machine.json`` / ``notes.json``
written beside it), so a report can be regenerated at any time, including from a partial benchmark, and no
number in a report is ever typed by hand.

Conventions used by every table:

* a cell is one (scenario, task) of the test split; ``avg`` is the mean over the per-scenario cells of the
  table's metric (the same definition as the trainer's ``mean_auc``), taken per seed and then summarised;
* ``mean ± std`` is over seeds (sample standard deviation; 0 for a single seed);
* the best mean of every column is in bold (highest AUC, lowest LogLoss / RMSE);
* differences against ``single_task`` or the full HEF are paired by seed (same seed, same data order).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from msmtrec.benchmark.runner import ALL, RESULT_COLUMNS
from msmtrec.report import format_table

HIGHER_IS_BETTER = {"auc": True, "gauc": True, "logloss": False, "rmse": False, "mae": False}
METRIC_TITLES = {"auc": "AUC", "gauc": "GAUC", "logloss": "LogLoss", "rmse": "RMSE"}
REFERENCE = "single_task"
WAVG = "pos-weighted avg"
"""Column of the mean over scenario cells weighted by their test positives (the report's view of the suites'
``weighted_auc`` monitor): cells of a dozen positives, whose AUC is mostly noise, count for little."""
FLAGSHIP = "hef"


@dataclass
class Results:
    """A results folder loaded for reporting."""

    frame: pd.DataFrame
    order: list[str]
    """Variant names in suite order."""
    kinds: dict[str, str]
    entries: dict[str, dict[str, Any]]
    machine: dict[str, Any]
    notes: list[str]
    train: dict[str, Any] = field(default_factory=dict)
    tuned: dict[str, Any] = field(default_factory=dict)
    """``tuned.json`` of a tuned benchmark (trials per model, each study's best validation score and params)."""
    """The suite's ``train:`` section (max_epochs and patience tell a capped run from an early-stopped one)."""

    @property
    def datasets(self) -> list[str]:
        return list(pd.unique(self.frame["dataset"]))

    def of(self, dataset: str) -> pd.DataFrame:
        return self.frame[self.frame["dataset"] == dataset]

    def seeds(self, dataset: str | None = None) -> list[int]:
        f = self.frame if dataset is None else self.of(dataset)
        return sorted(int(s) for s in pd.unique(f["seed"]))

    def models(self, dataset: str, kinds: tuple[str, ...]) -> list[str]:
        present = set(self.of(dataset)["model"])
        return [m for m in self.order if m in present and self.kinds.get(m) in kinds]


def load_results(out: Path) -> Results:
    """Read ``results.csv`` keeping only complete runs (a killed run's partial rows are dropped)."""
    path = out / "results.csv"
    frame = pd.read_csv(path, dtype={"dataset": str, "model": str, "scenario": str, "task": str, "metric": str})
    missing = set(RESULT_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    marker = frame[(frame["metric"] == "best_epoch") & (frame["task"] == ALL)]
    done = set(zip(marker["dataset"], marker["model"], marker["seed"], strict=True))
    keys = list(zip(frame["dataset"], frame["model"], frame["seed"], strict=True))
    frame = frame[[k in done for k in keys]]
    frame = frame.drop_duplicates(["dataset", "model", "seed", "scenario", "task", "metric"], keep="last")
    suite = json.loads((out / "suite.json").read_text()) if (out / "suite.json").exists() else {}
    entries = suite.get("entries", {})
    # Every model with results is reported: suite order first, then any the suite.json does not list (a folder
    # written by an older msmtrec, or by several suites), with their kind taken from results.csv.
    known = list(suite.get("order") or []) + [m for m in entries if m not in (suite.get("order") or [])]
    order = known + [m for m in pd.unique(frame["model"]) if m not in known]
    kinds = dict(zip(frame["model"], frame["kind"], strict=True))
    kinds.update({m: e["kind"] for m, e in entries.items()})
    machine = json.loads((out / "machine.json").read_text()) if (out / "machine.json").exists() else {}
    notes = json.loads((out / "notes.json").read_text()) if (out / "notes.json").exists() else []
    tuned = json.loads((out / "tuned.json").read_text()) if (out / "tuned.json").exists() else {}
    return Results(frame.reset_index(drop=True), order, kinds, entries, machine, notes, dict(suite.get("train") or {}),
                   tuned)


# ----------------------------------------------------------------------------------------- statistics


def cell_values(df: pd.DataFrame, metric: str, scenarios: bool = True) -> pd.DataFrame:
    """Per-seed values of ``metric``: index (model, seed), columns (scenario, task) in data order."""
    sub = df[(df["metric"] == metric) & (df["task"] != ALL)]
    sub = sub[sub["scenario"] != ALL] if scenarios else sub
    if sub.empty:
        return pd.DataFrame()
    cols = list(dict.fromkeys(zip(sub["scenario"], sub["task"], strict=True)))
    wide = sub.pivot_table(index=["model", "seed"], columns=["scenario", "task"], values="value", aggfunc="first")
    return wide.reindex(columns=pd.MultiIndex.from_tuples(cols, names=["scenario", "task"]))


def table_values(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Cells (per scenario, then ``all``) plus the per-seed ``avg`` over scenario cells."""
    per_scen = cell_values(df, metric, scenarios=True)
    if per_scen.empty:
        return per_scen
    overall = cell_values(df[df["scenario"] == ALL], metric, scenarios=False)
    avg = per_scen.mean(axis=1, skipna=False).rename(("avg", ""))
    parts = [per_scen] + ([overall] if not overall.empty else []) + [avg]
    weights = cell_weights(df, per_scen.columns) if metric in ("auc", "gauc") else None
    if weights is not None:
        wavg = (per_scen * weights).sum(axis=1, min_count=1) / weights[per_scen.notna().all(axis=0)].sum()
        parts.append(wavg.where(per_scen.notna().all(axis=1)).rename((WAVG, "")))
    return pd.concat(parts, axis=1)


def cell_weights(df: pd.DataFrame, cols: pd.Index) -> pd.Series | None:
    """Test positives of each (scenario, task) cell (the same for every model; from the first run)."""
    pos = df[(df["metric"] == "positives") & (df["scenario"] != ALL)]
    if pos.empty:
        return None
    first = pos[(pos["model"] == pos["model"].iloc[0]) & (pos["seed"] == pos["seed"].iloc[0])]
    w = first.set_index(["scenario", "task"])["value"]
    w = pd.Series([float(w.get(c, np.nan)) for c in cols], index=cols)
    return None if w.isna().any() or w.sum() <= 0 else w


def summarise(values: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Mean, std (ddof=1, 0 for one seed) and count over seeds, per model and column."""
    g = values.groupby(level="model", sort=False)
    mean, count = g.mean(), g.count()
    std = g.std(ddof=1).where(count > 1, 0.0)
    return mean, std, count


def fmt_pm(mean: float, std: float, digits: int = 4) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _col_label(col: tuple[str, str]) -> str:
    scen, task = col
    return scen if scen in ("avg", WAVG) else f"{scen} / {task}"


def metric_table(df: pd.DataFrame, models: list[str], metric: str) -> str | None:
    """Markdown: models × cells with mean ± std and the best mean per column in bold."""
    values = table_values(df[df["model"].isin(models)], metric)
    if values.empty:
        return None
    mean, std, _ = summarise(values)
    rows_models = [m for m in models if m in mean.index]
    higher = HIGHER_IS_BETTER[metric]
    best = mean.max() if higher else mean.min()
    rows = []
    for m in rows_models:
        row: list[object] = [m]
        for col in values.columns:
            mu, sd = mean.at[m, col], std.at[m, col]
            text = fmt_pm(mu, sd)
            if not math.isnan(mu) and np.isclose(mu, best[col], rtol=0, atol=5e-5):
                text = f"**{text}**"
            row.append(text)
        rows.append(row)
    return format_table(["model", *(_col_label(c) for c in values.columns)], rows, markdown=True)


# ------------------------------------------------------------------------------------------- summary


def header(res: Results, title: str, dataset: str | None = None) -> list[str]:
    m = res.machine
    seeds = res.seeds(dataset)
    lines = [f"# {title}", ""]
    commands = m.get("commands") or ([m["command"]] if m.get("command") else [])
    if len(commands) == 1:
        lines.append(f"Generated by `{commands[0]}`.")
    elif commands:
        lines.append("Generated by " + ", then ".join(f"`{c}`" for c in commands) + ".")
    lines.append(
        f"Seeds: {len(seeds)} ({', '.join(map(str, seeds))}). Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} "
        f"cores, torch {m.get('torch', '?')}, {m.get('threads_per_run', '?')} thread(s) per run, "
        f"{m.get('parallel_runs', '?')} run(s) at a time; torch-rechub {m.get('torch_rechub', '?')}."
    )
    if res.tuned:
        lines.append(
            f"Tuned mode: each model's config was chosen by {res.tuned.get('trials_per_model', '?')} Optuna trials "
            "on seed 0's validation split (test never read; `tuned.json` and `tune/`); ablations use their "
            "model's tuned config with the switch applied, torch-rechub rows the tuned sizes of the model they mirror."
        )
    lines.append("")
    return lines


def summary_md(res: Results) -> str:
    lines = header(res, "Benchmark summary")
    lines += [
        "Test split, mean ± std over seeds; `avg` is the mean over the per-scenario cells (the `all` columns "
        "pool every scenario and are not part of `avg`). Best mean per column in **bold** (highest AUC, lowest "
        "LogLoss / RMSE). Ablations are in `ablation.md`; rows prefixed `rechub-` are torch-rechub's "
        "implementations, trained on binary tasks only. `–` marks a cell a model has no value for.",
        "",
    ]
    for ds in res.datasets:
        df = res.of(ds)
        models = res.models(ds, ("model", "peer"))
        lines += [f"## {ds}", "", "### Cells (test split)", "", cells_table(df), ""]
        for metric in ("auc", "gauc", "logloss", "rmse"):
            table = metric_table(df, models, metric)
            if table:
                lines += [f"### {METRIC_TITLES[metric]}", "", table, ""]
        small = smallest_scenarios_table(df, models)
        if small:
            lines += ["### Smallest scenarios", "", small, ""]
        ci = ci_table(df, models)
        if ci:
            lines += ["### AUC with 95 % confidence intervals", "",
                      "Mean test AUC over seeds and, in brackets, the 95 % DeLong interval of one run's AUC "
                      "(its bounds averaged over seeds): the sampling uncertainty of the test cell itself, "
                      "separate from the seed-to-seed spread above.", "", ci, ""]
        cal = calibration_table(df, models)
        if cal:
            lines += ["### Calibration (predicted / observed positive rate)", "",
                      "Mean predicted probability divided by the observed rate per cell, mean over seeds: 1 is "
                      "calibrated, > 1 over-predicts. `mean abs(r−1)` summarises the scenario cells.", "", cal, ""]
        lines += ["### Targets", "", *target_checks(res, ds), ""]
    if res.notes:
        lines += ["## Notes", "", *(f"* {n}" for n in res.notes), ""]
    return "\n".join(lines)


def cells_table(df: pd.DataFrame) -> str:
    """Rows and positives of every test cell (the same data for every model: taken from the first run)."""
    sub = df[df["metric"].isin(["rows", "positives"]) & (df["task"] != ALL)]
    if sub.empty:
        return "No cell sizes recorded."
    first = sub[(sub["model"] == sub["model"].iloc[0]) & (sub["seed"] == sub["seed"].iloc[0])]
    rows = []
    for (scen, task), g in first.groupby(["scenario", "task"], sort=False):
        vals = dict(zip(g["metric"], g["value"], strict=True))
        pos = vals.get("positives")
        rows.append([scen, task, int(vals.get("rows", 0)), int(pos) if pos is not None else "–"])
    rows.sort(key=lambda r: (r[0] == ALL, r[0], r[1]))
    return format_table(["scenario", "task", "rows", "positives"], rows, markdown=True)


def smallest_scenarios_table(df: pd.DataFrame, models: list[str], k: int = 2) -> str | None:
    """Test AUC of the ``k`` smallest scenarios (by test rows), reported apart so an average over big
    scenarios cannot hide how a model does where data is scarce (the claim multi-scenario models make)."""
    sizes = df[(df["metric"] == "rows") & (df["scenario"] != ALL) & (df["task"] != ALL)]
    scen = sizes.groupby("scenario")["value"].max().sort_values()
    if len(scen) < 3:
        return None
    small = list(scen.index[:k])
    values = cell_values(df[df["model"].isin(models)], "auc")
    cols = [c for c in values.columns if c[0] in small]
    if not cols:
        return None
    values = values[cols]
    values[("avg", "")] = values.mean(axis=1, skipna=False)
    mean, std, _ = summarise(values)
    best = mean.max()
    rows = []
    for m in [m for m in models if m in mean.index]:
        cells = []
        for c in values.columns:
            text = fmt_pm(mean.at[m, c], std.at[m, c])
            if not math.isnan(mean.at[m, c]) and np.isclose(mean.at[m, c], best[c], rtol=0, atol=5e-5):
                text = f"**{text}**"
            cells.append(text)
        rows.append([m, *cells])
    intro = ", ".join(f"{s} ({int(scen[s]):,} test rows)" for s in small)
    table = format_table(["model", *(_col_label(c) for c in values.columns)], rows, markdown=True)
    return f"The {k} smallest scenarios of the test split: {intro}. Test AUC, mean ± std over seeds.\n\n{table}"


def ci_table(df: pd.DataFrame, models: list[str]) -> str | None:
    """Models × binary cells: ``mean [low, high]`` (DeLong bounds averaged over seeds)."""
    auc = cell_values(df[df["model"].isin(models)], "auc", scenarios=False)
    lo = cell_values(df[df["model"].isin(models)], "auc_ci_low", scenarios=False)
    hi = cell_values(df[df["model"].isin(models)], "auc_ci_high", scenarios=False)
    if auc.empty or lo.empty or hi.empty:
        return None
    g = lambda v: v.groupby(level="model", sort=False).mean()  # noqa: E731
    mu, l_, h = g(auc), g(lo), g(hi)
    cols = [c for c in auc.columns if c[0] != ALL] + [c for c in auc.columns if c[0] == ALL]
    rows = []
    for m in [m for m in models if m in mu.index]:
        row: list[object] = [m]
        for c in cols:
            a = mu.at[m, c] if c in mu.columns else math.nan
            if math.isnan(a):
                row.append("–")
                continue
            lo_v = l_.at[m, c] if c in l_.columns else math.nan
            hi_v = h.at[m, c] if c in h.columns else math.nan
            row.append(f"{a:.4f} [{lo_v:.3f}, {hi_v:.3f}]" if not math.isnan(lo_v) else f"{a:.4f}")
        rows.append(row)
    return format_table(["model", *(_col_label(c) for c in cols)], rows, markdown=True)


def calibration_table(df: pd.DataFrame, models: list[str]) -> str | None:
    """Models × binary cells: predicted / observed positive rate, mean over seeds."""
    sub = df[df["model"].isin(models)]
    pred = cell_values(sub, "pred_mean", scenarios=False)
    obs = cell_values(sub, "label_mean", scenarios=False)
    auc_cells = set(cell_values(sub, "auc", scenarios=False).columns)
    if pred.empty or obs.empty:
        return None
    cols = [c for c in pred.columns if c in auc_cells or any(c[1] == t for _, t in auc_cells)]
    cols = [c for c in cols if c in obs.columns and c[1] in {t for _, t in auc_cells}]
    if not cols:
        return None
    ratio = (pred[cols] / obs[cols].where(obs[cols] > 0)).groupby(level="model", sort=False).mean()
    cols = [c for c in cols if c[0] != ALL] + [c for c in cols if c[0] == ALL]
    rows = []
    for m in [m for m in models if m in ratio.index]:
        r = ratio.loc[m]
        scen = [r[c] for c in cols if c[0] != ALL and not math.isnan(r[c])]
        summary = f"{np.mean(np.abs(np.asarray(scen) - 1)):.3f}" if scen else "–"
        rows.append([m, *("–" if math.isnan(r[c]) else f"{r[c]:.3f}" for c in cols), summary])
    return format_table(["model", *(_col_label(c) for c in cols), "mean abs(r−1)"], rows, markdown=True)


def target_checks(res: Results, ds: str) -> list[str]:
    """The published targets, checked from the numbers (each line says met / not met and the figures)."""
    df = res.of(ds)
    models = res.models(ds, ("model", "peer"))
    values = table_values(df[df["model"].isin(models)], "auc")
    if values.empty or FLAGSHIP not in values.index.get_level_values("model"):
        return ["* HEF did not run on this dataset."]
    mean, std, _ = summarise(values)
    out = []
    avg_all = mean[("avg", "")].dropna().sort_values(ascending=False)
    ours = [m for m in avg_all.index if res.kinds.get(m) == "model"]
    avg = avg_all[ours]
    rank = list(avg.index).index(FLAGSHIP) + 1
    out.append(
        f"* Best average AUC among our models: **{avg.index[0]}** ({avg.iloc[0]:.4f}); HEF ranks {rank} of "
        f"{len(avg)} ({avg[FLAGSHIP]:.4f}) — target {'met' if rank == 1 else 'not met'}."
    )
    if len(avg_all) > len(avg):
        rank_all = list(avg_all.index).index(FLAGSHIP) + 1
        out.append(f"* With the torch-rechub rows: best **{avg_all.index[0]}** ({avg_all.iloc[0]:.4f}); HEF ranks "
                   f"{rank_all} of {len(avg_all)}.")
    if (WAVG, "") in mean.columns:
        w = mean[(WAVG, "")].dropna()
        w = w[[m for m in w.index if res.kinds.get(m) == "model"]].sort_values(ascending=False)
        if FLAGSHIP in w.index:
            out.append(f"* On the positives-weighted average AUC (cells weighted by test positives): best "
                       f"**{w.index[0]}** ({w.iloc[0]:.4f}); HEF ranks {list(w.index).index(FLAGSHIP) + 1} of {len(w)} "
                       f"({w[FLAGSHIP]:.4f}).")
    out.append(paired_line(values, avg, len(res.seeds(ds))))
    baselines = [m for m in mean.index if m != FLAGSHIP]
    cells = [c for c in values.columns if c[0] not in ("avg", WAVG, ALL)]
    behind = []
    for c in cells:
        col = mean.loc[baselines, c].dropna()
        if col.empty:
            continue
        best = col.idxmax()
        if mean.at[FLAGSHIP, c] < col[best] - std.at[best, c]:
            behind.append(f"{_col_label(c)} ({mean.at[FLAGSHIP, c]:.4f} vs {best} {col[best]:.4f} ± "
                          f"{std.at[best, c]:.4f})")
    if len(res.seeds(ds)) < 2:
        out.append(
            "* One seed, so no std: the one-std check cannot be made. Cells where HEF is below the best baseline "
            f"at all: {len(behind)}" + (": " + "; ".join(behind) + "." if behind else ".")
        )
    else:
        out.append(
            "* Cells where HEF is more than one std (of the best baseline) below the best baseline: "
            + ("none — target met." if not behind else f"{len(behind)} — target not met: " + "; ".join(behind) + ".")
        )
    if "ple" in mean.index:
        h, p = std.at[FLAGSHIP, ("avg", "")], std.at["ple", ("avg", "")]
        if len(res.seeds(ds)) < 2:
            verdict = "not measurable with one seed"
        else:
            verdict = "met" if h <= p + 1e-12 else "not met"
        out.append(f"* Std of average AUC over seeds: HEF {h:.4f}, PLE {p:.4f} — target (HEF ≤ PLE) {verdict}.")
    return out


def paired_line(values: pd.DataFrame, avg: pd.Series, n_seeds: int) -> str:
    """HEF against the best other of our models (by mean average AUC), paired by seed."""
    from msmtrec.benchmark.stats import paired_test

    others = [m for m in avg.index if m != FLAGSHIP]
    if not others:
        return "* No baseline to compare HEF with."
    best = others[0]
    a = values.xs(FLAGSHIP, level="model")[("avg", "")]
    b = values.xs(best, level="model")[("avg", "")]
    seeds = a.index.intersection(b.index)
    r = paired_test(a.loc[seeds].to_numpy(), b.loc[seeds].to_numpy())
    if r["n"] < 2:
        return (f"* Paired test of HEF against the best baseline ({best}): needs at least two common seeds "
                f"(have {r['n']}); Δ avg AUC {r['mean_diff']:+.4f}.")
    verdict = "significant at 5 %" if r["t_p"] < 0.05 else "not significant at 5 %"
    return (f"* Paired test over {r['n']} seeds, HEF − best baseline ({best}): Δ avg AUC {r['mean_diff']:+.4f}, "
            f"paired t-test p = {r['t_p']:.3g} ({verdict}), exact sign-flip p = {r['sign_flip_p']:.3g} "
            f"(smallest possible with {r['n']} seeds: {2 / 2 ** r['n']:.3g}).")


# ------------------------------------------------------------------------------------------- seesaw


def transfer(df: pd.DataFrame, models: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple[str, str]]]:
    """Paired (by seed) improvement over ``single_task`` per cell: AUC gain for binary tasks, RMSE drop for
    regression tasks, so positive always means better. Returns (mean, std, columns)."""
    parts = []
    auc = cell_values(df, "auc")
    if not auc.empty:
        parts.append(auc)
    rmse = cell_values(df, "rmse")
    if not rmse.empty:
        parts.append(-rmse)
    if not parts:
        return pd.DataFrame(), pd.DataFrame(), []
    values = pd.concat(parts, axis=1)
    ref_mask = values.index.get_level_values("model") == REFERENCE
    if not ref_mask.any():
        return pd.DataFrame(), pd.DataFrame(), []
    ref = values[ref_mask].droplevel("model")
    rows_mean, rows_std = {}, {}
    for m in models:
        mask = values.index.get_level_values("model") == m
        if not mask.any():
            continue
        mine = values[mask].droplevel("model")
        seeds = mine.index.intersection(ref.index)
        diff = mine.loc[seeds] - ref.loc[seeds]
        rows_mean[m] = diff.mean()
        rows_std[m] = diff.std(ddof=1) if len(seeds) > 1 else diff.mean() * 0.0
    mean = pd.DataFrame(rows_mean).T.reindex(columns=values.columns)
    std = pd.DataFrame(rows_std).T.reindex(columns=values.columns)
    return mean, std, list(values.columns)


def seesaw_md(res: Results) -> str:
    lines = header(res, "Transfer against single-task models (negative transfer and seesaw)")
    lines += [
        "Δ = model − `single_task` per test cell, paired by seed and averaged: AUC gain for binary tasks, "
        "RMSE *drop* for regression tasks (so positive is always better). `neg` counts cells with Δ < 0; "
        "`neg > 1 std` those whose Δ is below zero by more than the std of the paired differences (with one "
        "seed every negative cell counts). `seesaw` lists the scenarios where one task gained while another "
        "lost — improving one task cost another.",
        "",
    ]
    for ds in res.datasets:
        df = res.of(ds)
        models = [m for m in res.models(ds, ("model", "peer")) if m != REFERENCE]
        mean, std, cols = transfer(df, models)
        lines += [f"## {ds}", ""]
        if mean.empty:
            lines += [f"`{REFERENCE}` did not run on this dataset, so there is nothing to compare against.", ""]
            continue
        rows = []
        for m in mean.index:
            mu, sd = mean.loc[m], std.loc[m]
            present = mu.dropna()
            neg = int((present < 0).sum())
            sig = int(((present + sd[present.index].fillna(0)) < 0).sum())
            seesaw = []
            for scen in dict.fromkeys(c[0] for c in present.index):
                d = present[[c for c in present.index if c[0] == scen]]
                if (d > 0).any() and (d < 0).any():
                    up = ",".join(t for (_, t), v in d.items() if v > 0)
                    down = ",".join(t for (_, t), v in d.items() if v < 0)
                    seesaw.append(f"{scen} ({up}↑ {down}↓)")
            cells = [("–" if math.isnan(mu[c]) else f"{mu[c]:+.4f}") for c in cols]
            rows.append([m, *cells, f"{neg}/{len(present)}", sig, "; ".join(seesaw) if seesaw else "no"])
        heads = ["model", *(f"{s} / {t}" + (" (RMSE)" if _is_rmse(df, s, t) else "") for s, t in cols),
                 "neg", "neg > 1 std", "seesaw"]
        lines += [format_table(heads, rows, markdown=True), ""]
    return "\n".join(lines)


def _is_rmse(df: pd.DataFrame, scen: str, task: str) -> bool:
    sub = df[(df["scenario"] == scen) & (df["task"] == task)]
    return bool((sub["metric"] == "rmse").any())


# ------------------------------------------------------------------------------------------ ablation


def ablation_md(res: Results) -> str:
    lines = header(res, "HEF ablations")
    lines += [
        "HEF with one switch changed per row (same budget, data and seeds; `switch` says which way). `avg AUC` "
        "is the mean over scenario × binary-task cells; Δ = variant − `hef` (its default config), paired by seed "
        "(a part turned off: negative = it was helping; a part turned on: positive = it helps). LogLoss and "
        "RMSE averages "
        "likewise (lower is better). `Δ valid` is the same paired difference on the validation monitor of "
        "each run's kept epoch (the split early stopping and tuning read): HEF's defaults are judged on it, "
        "the test Δ is reported only (n/a for runs recorded before the monitor was).",
        "",
    ]
    for ds in res.datasets:
        df = res.of(ds)
        variants = ([FLAGSHIP] if FLAGSHIP in set(df["model"]) else []) + res.models(ds, ("ablation",))
        lines += [f"## {ds}", ""]
        if len(variants) < 2:
            lines += ["No ablation variants ran on this dataset.", ""]
            continue
        auc = table_values(df[df["model"].isin(variants)], "auc")
        other = {m: table_values(df[df["model"].isin(variants)], m) for m in ("logloss", "rmse")}
        runs = run_values(df)
        valid = per_seed_run_value(df, "valid_monitor")
        rows = []
        ref = auc.xs(FLAGSHIP, level="model")[("avg", "")] if FLAGSHIP in variants else None
        for v in variants:
            a = auc.xs(v, level="model")[("avg", "")]
            row: list[object] = [v, res.entries.get(v, {}).get("switch") or "default config"]
            row.append(int(runs.loc[v, "params"]) if v in runs.index else None)
            row.append(fmt_pm(a.mean(), a.std(ddof=1) if len(a) > 1 else 0.0))
            if ref is not None and v != FLAGSHIP:
                row.append(paired_delta(a, ref))
                row.append(paired_delta(*(valid.get(x, pd.Series(dtype=float)) for x in (v, FLAGSHIP))))
            else:
                row += ["–", "–"]
            for m in ("logloss", "rmse"):
                t = other[m]
                if t.empty:
                    continue
                s = t.xs(v, level="model")[("avg", "")]
                row.append(fmt_pm(s.mean(), s.std(ddof=1) if len(s) > 1 else 0.0))
            rows.append(row)
        heads = ["variant", "switch", "params", "avg AUC", "Δ avg AUC vs hef", "Δ valid vs hef"]
        heads += [f"avg {METRIC_TITLES[m]}" for m in ("logloss", "rmse") if not other[m].empty]
        lines += [format_table(heads, rows, markdown=True), ""]
    return "\n".join(lines)


def paired_delta(variant: pd.Series, reference: pd.Series) -> str:
    """``mean ± std`` of ``variant − reference`` over the seeds both have (index: seed); ``n/a`` if none."""
    d = (variant - reference).dropna()
    if d.empty:
        return "n/a"
    sd = d.std(ddof=1) if len(d) > 1 else 0.0
    return f"{d.mean():+.4f} ± {sd:.4f}"


def per_seed_run_value(df: pd.DataFrame, metric: str) -> dict[str, pd.Series]:
    """A run-level value per model as a Series indexed by seed (models that never recorded it are absent)."""
    sub = df[(df["scenario"] == ALL) & (df["task"] == ALL) & (df["metric"] == metric)]
    return {str(m): g.set_index("seed")["value"] for m, g in sub.groupby("model", sort=False)}


# ---------------------------------------------------------------------------------------------- cost


def run_values(df: pd.DataFrame) -> pd.DataFrame:
    """Run-level values averaged over seeds: index model, columns metric (plus ``<metric>_std``)."""
    sub = df[(df["scenario"] == ALL) & (df["task"] == ALL)]
    g = sub.groupby(["model", "metric"], sort=False)["value"]
    mean = g.mean().unstack("metric")
    std = g.std(ddof=1).fillna(0.0).unstack("metric").add_suffix("_std")
    return pd.concat([mean, std], axis=1)


def capped_runs(df: pd.DataFrame, train: dict[str, Any]) -> pd.Series:
    """Per model, how many runs ended at the epoch cap rather than by early stopping.

    A run ended at the cap when it trained ``max_epochs`` epochs and its last improvement was fewer than
    ``patience`` epochs before the end (so early stopping had not fired). Without a recorded cap every
    run counts as early-stopped.
    """
    cap = train.get("max_epochs")
    if not cap:
        return pd.Series(dtype=int)
    # patience counts validation passes; in epochs that is patience / evals_per_epoch
    patience = max(int(train.get("patience", 2)), 1) / max(int(train.get("evals_per_epoch", 1)), 1)
    sub = df[(df["scenario"] == ALL) & (df["task"] == ALL) & df["metric"].isin(["epochs", "best_epoch"])]
    wide = sub.pivot_table(index=["model", "seed"], columns="metric", values="value", aggfunc="first")
    capped = (wide["epochs"] >= cap) & (wide["epochs"] - 1 - wide["best_epoch"] < patience)
    return capped.groupby(level="model", sort=False).sum().astype(int)


def cost_md(res: Results) -> str:
    lines = header(res, "Cost: size and speed")
    lines += [
        "Per model, mean over seeds. `train samples/s` is what the trainer reports: training rows processed "
        "divided by the wall-clock time of `fit` (training batches plus the per-epoch validation pass, the same "
        "loop for every row including the torch-rechub ones). `inference rows/s` is the best of three eval-mode "
        "passes over the test split. FLOPs are the models' own rough multiply-add counts (0 where unknown). "
        "Timings come from a shared machine: compare rows of the same table, not across machines.",
        "",
    ]
    for ds in res.datasets:
        df = res.of(ds)
        runs = run_values(df)
        models = res.models(ds, ("model", "ablation", "peer"))
        capped = capped_runs(df, res.train)
        n_runs = df[(df["metric"] == "best_epoch") & (df["task"] == ALL)].groupby("model").size()
        rows = []
        for m in models:
            r = runs.loc[m]
            rows.append([
                m, res.kinds.get(m, ""), int(r["params"]), int(r.get("flops_per_sample", 0) or 0),
                f"{r['epochs']:.1f}", f"{int(capped.get(m, 0))}/{int(n_runs.get(m, 0))}",
                fmt_pm(r["train_seconds"], r["train_seconds_std"], 1),
                fmt_pm(r["samples_per_second"], r["samples_per_second_std"], 0),
                int(round(r["inference_rows_per_second"])),
            ])
        heads = ["model", "kind", "params", "FLOPs/sample", "epochs", "at cap", "train s", "train samples/s",
                 "inference rows/s"]
        cap = res.train.get("max_epochs")
        total = int(capped.sum()) if len(capped) else 0
        cap_line = (f"Runs that ended at the {cap}-epoch cap instead of by early stopping (patience "
                    f"{res.train.get('patience', '?')}): **{total} of {int(n_runs.sum())}** (target 0; `at cap` per "
                    "model)." if cap else "The suite's epoch cap is not recorded, so capped runs are not counted.")
        lines += [f"## {ds}", "", cap_line, "", format_table(heads, rows, markdown=True), ""]
        peers = res.models(ds, ("peer",))
        if peers:
            lines += ["### Ours against torch-rechub", "", *peer_comparison(res, ds, peers, runs), ""]
    if res.notes:
        lines += ["## Notes", "", *(f"* {n}" for n in res.notes), ""]
    return "\n".join(lines)


def peer_comparison(res: Results, ds: str, peers: list[str], runs: pd.DataFrame) -> list[str]:
    """Speed ratio and AUC difference of each peer against the entry it mirrors (on the peer's tasks)."""
    df = res.of(ds)
    rows = []
    for p in peers:
        ours = res.entries.get(p, {}).get("like")
        if ours not in runs.index:
            continue
        tasks = set(df[df["model"] == p]["task"]) - {ALL}
        sub = df[df["model"].isin([ours, p]) & (df["task"].isin(tasks) | (df["task"] == ALL))]
        auc = table_values(sub, "auc")
        a_o = auc.xs(ours, level="model")[("avg", "")]
        a_p = auc.xs(p, level="model")[("avg", "")]
        n = min(len(a_o), len(a_p))
        diff = a_o.mean() - a_p.mean()
        if n > 1:
            se = math.sqrt(a_o.var(ddof=1) / len(a_o) + a_p.var(ddof=1) / len(a_p))
            noise = "yes" if abs(diff) <= 2 * se else "no"
            noise = f"{noise} (2·SE = {2 * se:.4f})"
        else:
            noise = "n/a (one seed)"
        ratio = runs.at[ours, "samples_per_second"] / runs.at[p, "samples_per_second"]
        rows.append([
            f"{ours} vs {p}", f"{ratio:.2f}×", fmt_pm(a_o.mean(), a_o.std(ddof=1) if len(a_o) > 1 else 0.0),
            fmt_pm(a_p.mean(), a_p.std(ddof=1) if len(a_p) > 1 else 0.0), f"{diff:+.4f}", noise,
            int(runs.at[ours, "params"]), int(runs.at[p, "params"]),
        ])
    heads = ["pair", "train samples/s ratio (ours / rechub)", "ours avg AUC", "rechub avg AUC", "Δ AUC",
             "within noise", "params ours", "params rechub"]
    intro = ("Average AUC here is over the peer's tasks only (binary tasks). Within noise: |Δ| ≤ two standard "
             "errors of the difference of means over seeds.")
    return [intro, "", format_table(heads, rows, markdown=True)]
