"""Issue 22's proof: daily retraining from scratch against daily warm starts on a drifting simulated world,
and ``msmtrec monitor`` of the week-1 model checked against the simulator's ground truth.

    nice -n 10 python benchmarks/warm_start_drift.py --out benchmarks/results/warm_start_drift

Steps (each skipped when its output exists, so a killed run continues where it stopped):

1. ``msmtrec data synth`` a world whose drift is confined to ``--drift-scenarios``; its rows are split into
   one Parquet file per day (``days/day-DD.parquet``, days 0 .. ``--days``-1).
2. Week 1 (days 0–6) trains the first model (``runs/week1``).
3. For every later day ``d``: (a) **scratch** trains a new model on days 0 .. d-1; (b) **warm** continues the
   previous day's warm run on day d-1's rows only (``train --init-from``; day 7's parent is ``runs/week1``).
   Both are scored on day ``d`` (rows never trained on) with :mod:`msmtrec.monitoring`; the week-1 model is
   scored too (``frozen``). Wall time of every training run is recorded (``daily.csv``).
4. ``msmtrec monitor runs/week1 --data 'days/*.parquet' --by week --time-column day`` (the CLI, as a
   scheduler would run it) and a comparison of its alerts with ``ground_truth.json`` (``proof.md``).

Every run uses one torch thread. Prints the tables that docs/monitoring.md shows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

TASKS = ("click", "purchase")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/warm_start_drift"))
    p.add_argument("--rows", type=int, default=300_000, help="Rows over the simulator's 30 days.")
    p.add_argument("--days", type=int, default=28, help="Days used (0 .. days-1); week 1 is days 0-6.")
    p.add_argument("--drift", type=float, default=3.0)
    p.add_argument("--drift-scenarios", default="2,5")
    p.add_argument("--model", default="star")
    p.add_argument("--model-set", action="append", default=["model.star_dims=[64,32]", "model.aux_dims=[16]",
                                                             "model.tower_dims=[32]", "model.embed_dim=8"])
    p.add_argument("--epochs", type=int, default=2, help="Epochs of every daily run (scratch and warm).")
    p.add_argument("--week1-epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


# ------------------------------------------------------------------------------------------------- data


def make_world(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    world = args.out / "world"
    if not (world / "ground_truth.json").exists():
        cmd = [sys.executable, "-m", "msmtrec", "data", "synth", "--out", str(world), "--overwrite",
               "--rows", str(args.rows), "--scenarios", "6", "--imbalance", "10", "--click-rate", "0.15,0.35",
               "--purchase-rate", "0.3,0.5", "--users", "20000", "--items", "10000", "--seed", str(args.seed),
               "--drift", str(args.drift), "--drift-scenarios", args.drift_scenarios, "--row-group-rows", "16384"]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
    days = args.out / "days"
    if not (days / f"day-{args.days - 1:02d}.parquet").exists():
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        days.mkdir(parents=True, exist_ok=True)
        table = pq.read_table(sorted(str(p) for p in world.glob("part-*.parquet")))
        for d in range(args.days):
            pq.write_table(table.filter(pc.equal(table["day"], d)), days / f"day-{d:02d}.parquet")
    return days, json.loads((world / "ground_truth.json").read_text())


def write_spec(args: argparse.Namespace, days: Path, first: int, last: int, name: str) -> Path:
    """The shipped ``synthetic`` spec on days first..last, with hash tables sized for this small world."""
    from msmtrec.data.spec import load_spec, spec_to_dict

    raw = spec_to_dict(load_spec("synthetic"))
    raw["files"]["path"] = [str((days / f"day-{d:02d}.parquet").resolve()) for d in range(first, last + 1)]
    for f in raw["features"]["sparse"]:
        if isinstance(f, dict) and f.get("name") == "user_id":
            f["hash_buckets"] = 32768
        if isinstance(f, dict) and f.get("name") == "item_id":
            f["hash_buckets"] = 16384
    path = args.out / "specs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    import yaml

    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------------------ train


def train(args: argparse.Namespace, spec: Path, out: Path, epochs: int, parent: Path | None = None) -> float:
    """Train one run in-process (what ``msmtrec train`` does); returns its wall seconds (0 when it existed)."""
    from msmtrec.config import parse_set_options
    from msmtrec.training import run

    if (out / "metrics.json").exists():
        return json.loads((out / "wall.json").read_text())["seconds"] if (out / "wall.json").exists() else 0.0
    if out.exists():  # a run killed mid-way: start it again
        import shutil

        shutil.rmtree(out)
    sets = parse_set_options([f"train.max_epochs={epochs}", f"train.batch_size={args.batch_size}",
                              "train.num_threads=1", "train.patience=100"])
    if parent is None:
        sets.update(parse_set_options(args.model_set))
    t0 = time.perf_counter()
    run.train(out, data=str(spec), model_name=None if parent else args.model, sets=sets, seed=args.seed,
              init_from=parent)
    wall = time.perf_counter() - t0
    (out / "wall.json").write_text(json.dumps({"seconds": wall}))
    return wall


def score(run_dir: Path, day_file: Path) -> pd.DataFrame:
    """Cells (scenario × task: AUC, calibration) of ``run_dir`` on one day's rows, via msmtrec.monitoring."""
    from msmtrec import monitoring
    from msmtrec.data.pipeline import read_and_filter
    from msmtrec.runs import load_run

    loaded = load_run(run_dir)
    pre = loaded.preprocessor
    spec = monitoring.new_data_spec(pre.spec, str(day_file), "day")
    frame = read_and_filter(spec).frame
    windows = monitoring.window_labels(frame, "day", "day")
    result = monitoring.monitor(loaded.model, pre, frame, windows, frame.head(2000))  # drift is step 4's job
    return result.cells[result.cells["type"] == "binary"]


def daily(args: argparse.Namespace, days: Path) -> pd.DataFrame:
    """Steps 2-3: week 1, then scratch / warm / frozen scored on each later day; rows appended to daily.csv."""
    path = args.out / "daily.csv"
    done = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["day", "arm"])
    runs = args.out / "runs"
    week1 = runs / "week1"
    w1_wall = train(args, write_spec(args, days, 0, 6, "days-00-06"), week1, args.week1_epochs)
    print(f"week 1 model: {w1_wall:.1f} s", flush=True)
    parent = week1
    for d in range(7, args.days):
        warm_dir = runs / f"warm-{d - 1:02d}"
        scratch_dir = runs / f"scratch-{d - 1:02d}"
        arms = {"frozen": (week1, 0.0)}
        if d == 7:  # the first scored day: both strategies hold the week-1 model
            arms |= {"scratch": (week1, w1_wall), "warm": (week1, w1_wall)}
        else:
            wall_s = train(args, write_spec(args, days, 0, d - 1, f"days-00-{d - 1:02d}"), scratch_dir, args.epochs)
            wall_w = train(args, write_spec(args, days, d - 1, d - 1, f"day-{d - 1:02d}"), warm_dir, args.epochs,
                           parent=parent)
            parent = warm_dir
            arms |= {"scratch": (scratch_dir, wall_s), "warm": (warm_dir, wall_w)}
        new = []
        for arm, (run_dir, wall) in arms.items():
            if ((done["day"] == d) & (done["arm"] == arm)).any():
                continue
            cells = score(run_dir, days / f"day-{d:02d}.parquet")
            new.append(cells.assign(day=d, arm=arm, train_seconds=round(wall, 2)))
        if new:
            done = pd.concat([done, *new], ignore_index=True) if len(done) else pd.concat(new, ignore_index=True)
            done.to_csv(path, index=False)
        print(f"day {d}: scored " + ", ".join(arms), flush=True)
    return done


# ------------------------------------------------------------------------------------------------ proof


def monitor_week1(args: argparse.Namespace, days: Path) -> tuple[int, list[str]]:
    out = args.out / "monitor-week1"
    cmd = [sys.executable, "-m", "msmtrec", "monitor", str(args.out / "runs" / "week1"), "--data",
           str(days / "day-*.parquet"), "--by", "week", "--time-column", "day", "--out", str(out)]
    print("$", " ".join(cmd[1:]), flush=True)
    rc = subprocess.run(cmd).returncode
    return rc, (out / "alerts.txt").read_text().splitlines()


def tables(args: argparse.Namespace, daily_rows: pd.DataFrame, truth: dict[str, Any], rc: int,
           alerts: list[str]) -> str:
    """Markdown: per-scenario AUC and calibration by week for each arm, wall time, and the alert check."""
    drifting = set(truth["drifting_scenarios"])
    names = [s["name"] for s in truth["scenarios"]]
    d = daily_rows[daily_rows["scenario"] != "(all)"].copy()
    first = d["day"].astype(int) // 7 * 7
    d["week"] = "days " + first.astype(str) + "-" + (first + 6).astype(str)
    lines = [f"drifting scenarios (ground truth): {', '.join(sorted(drifting))}", ""]
    for metric in ("auc", "calibration"):
        for task in TASKS:
            part = d[d["task"] == task]
            piv = part.pivot_table(index="scenario", columns=["week", "arm"], values=metric, aggfunc="mean")
            piv = piv.reindex(names)
            piv = piv[sorted(piv.columns, key=lambda c: (int(c[0].split()[1].split("-")[0]), c[1]))]
            lines.append(f"**{metric} of {task}** (mean over the days of the week; arms: frozen = week-1 model, "
                         "scratch, warm)")
            lines.append("")
            cols = list(piv.columns)
            lines.append("| scenario | " + " | ".join(f"{w} {a}" for w, a in cols) + " |")
            lines.append("|---" * (len(cols) + 1) + "|")
            for s, row in piv.iterrows():
                mark = " (drifts)" if s in drifting else ""
                lines.append(f"| {s}{mark} | " + " | ".join("n/a" if pd.isna(v) else f"{v:.3f}" for v in row) + " |")
            lines.append("")
    shown = [n for n in names if n in drifting] + [n for n in names if n not in drifting][:1]
    for task in TASKS:
        lines.append(f"**{task} by day** (AUC / calibration; scratch vs warm; the drifting scenarios and the "
                     "largest stationary one)")
        lines.append("")
        lines.append("| day | " + " | ".join(f"{n} {m} {a}" for n in shown for m in ("AUC", "cal")
                                             for a in ("scratch", "warm")) + " |")
        lines.append("|---" * (4 * len(shown) + 1) + "|")
        part = d[d["task"] == task].set_index(["day", "scenario", "arm"])
        for day in sorted(d["day"].unique()):
            vals = [part.loc[(day, n, a), m] for n in shown for m in ("auc", "calibration")
                    for a in ("scratch", "warm")]
            lines.append(f"| {day} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
        lines.append("")
    walls = d.drop_duplicates(["day", "arm"])[["day", "arm", "train_seconds"]]
    walls = walls[walls["day"] > 7]
    lines.append("**training wall time per day** (s; scratch trains on every day so far, warm on one day)")
    lines.append("")
    lines.append("| arm | days | total s | median s/day | min s/day | max s/day |")
    lines.append("|---|---|---|---|---|---|")
    for arm in ("scratch", "warm"):
        w = walls[walls["arm"] == arm]["train_seconds"]
        lines.append(f"| {arm} | {len(w)} | {w.sum():.0f} | {w.median():.1f} | {w.min():.1f} | {w.max():.1f} |")
    lines.append("")
    cells = pd.read_csv(args.out / "monitor-week1" / "cells.csv")
    cells = cells[cells["type"] == "binary"]
    lines.append("**week-1 model, `msmtrec monitor --by week`: calibration (predicted / observed) by window** "
                 "(week 0 = days 0-6, the training week; weeks 1-3 = days 7-27)")
    lines.append("")
    windows = list(dict.fromkeys(cells["window"]))
    lines.append("| scenario | task | " + " | ".join(windows) + " | positives (last window) |")
    lines.append("|---" * (len(windows) + 3) + "|")
    for s in [*names, "(all)"]:
        for task in TASKS:
            c = cells[(cells["scenario"] == s) & (cells["task"] == task)].set_index("window").reindex(windows)
            mark = " (drifts)" if s in drifting else ""
            lines.append(f"| {s}{mark} | {task} | " + " | ".join(f"{v:.3f}" for v in c["calibration"])
                         + f" | {int(c['positives'].iloc[-1])} |")
    lines.append("")
    fields = pd.read_csv(args.out / "monitor-week1" / "fields.csv")
    lines.append(f"largest PSI of any field in any window × scenario: {fields['psi'].max():.3f} "
                 f"({fields.loc[fields['psi'].idxmax(), 'scenario']}, {fields.loc[fields['psi'].idxmax(), 'window']})")
    lines.append("")
    flagged = {}
    for a in alerts:
        parts = [p.strip() for p in a.split(":", 1)[1].split("/")]
        kind, week, scen = a.split(":", 1)[0], parts[0], parts[1]
        flagged.setdefault(scen, set()).add(f"{kind} {week}")
    lines.append(f"**monitor of the week-1 model** (exit status {rc}; {len(alerts)} alert(s))")
    lines.append("")
    lines.append("| scenario | drift injected | alerts (kind, window) | verdict |")
    lines.append("|---|---|---|---|")
    for s in [*names, "(all)"]:
        got = sorted(flagged.get(s, set()))
        inj = s in drifting
        later = [g for g in got if not g.endswith("week 0")]
        verdict = ("caught" if later else "MISSED") if inj else ("quiet" if not later else "FALSE ALARM")
        if s == "(all)":
            verdict = "pooled (mix changes)"
            inj = None
        lines.append(f"| {s} | {'' if inj is None else ('yes' if inj else 'no')} | {', '.join(got) or '-'} "
                     f"| {verdict} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    days, truth = make_world(args)
    rows = daily(args, days)
    rc, alerts = monitor_week1(args, days)
    md = tables(args, rows, truth, rc, alerts)
    (args.out / "proof.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
