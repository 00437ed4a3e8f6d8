"""Sharded embedding tables (TorchRec, row-wise over 2 ranks) vs every rank holding every table.

Three runs of ``msmtrec train --stream`` under ``torchrun --nproc_per_node=2`` on the same simulated logs
(:mod:`msmtrec.data.synth`, users/items drawn from power laws):

* ``plain-big``    plain embeddings, user/item ids hashed into big tables (few collisions), plain DDP:
                   every rank holds both tables, their gradients and two Adam moments;
* ``sharded-big``  the same tables with ``train.embeddings=torchrec``: user_id and item_id row-wise,
                   the small fields data-parallel, the planner held to ``--budget-mb`` per rank;
* ``hashed-small`` plain embeddings with the ids hashed into small tables (what fits without sharding:
                   many ids per row, so collisions);
* ``hashed-small-torchrec`` the small tables through the same TorchRec path and Adagrad as ``sharded-big``,
                   so the AUC gap between the two is the cost of the collisions alone.

A last run checks that the budget binds: the big tables placed table-wise (each whole on one rank) under
the same ``--budget-mb`` must be refused by the planner.

Reported per run: embedding table size, the largest per-rank peak RSS (``VmHWM`` of each torchrun
worker, polled), training samples/s (from ``metrics.json``: rows over the wall time of ``fit``, validation
included) and test AUCs. The sharded run is trained with ``train.consolidate=false`` so its peak RSS is
training only; it is then consolidated offline into a plain ``model.pt`` and re-evaluated with
``msmtrec evaluate`` (the servable form must score the same).

Run (the TorchRec venv; a few minutes on 2 cores):
    nice -n 10 /work/venv-torchrec/bin/python benchmarks/sharded_scale.py --out benchmarks/results/sharded_scale

Finished runs are kept (their ``metrics.json`` + ``peak_rss.json``), so a killed benchmark resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from msmtrec.data.spec import load_spec
from msmtrec.data.synth import SynthConfig, synthesize


def _children(pid: int) -> set[int]:
    """All descendants of ``pid`` (from /proc/*/task/*/children)."""
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
            except OSError:
                continue
            for k in map(int, kids):
                if k not in out:
                    out.add(k)
                    todo.append(k)
    return out


def _hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _is_worker(pid: int) -> bool:
    try:
        return "msmtrec" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def run_with_peak_rss(cmd: list[str], log: Path) -> tuple[int, dict[int, float]]:
    """Run ``cmd``; return its exit code and the peak RSS (MiB) of each torchrun worker seen."""
    peaks: dict[int, float] = {}
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        while proc.poll() is None:
            for pid in _children(proc.pid):
                if _is_worker(pid):
                    hwm = _hwm_mb(pid)
                    if hwm is not None:
                        peaks[pid] = max(peaks.get(pid, 0.0), hwm)
            time.sleep(0.2)
    return proc.returncode, peaks


def make_data(root: Path, args: argparse.Namespace) -> None:
    if (root / "data").exists():
        return
    synthesize(
        SynthConfig(
            rows=args.rows, users=args.users, items=args.items, imbalance=10.0, seed=0,
            rows_per_file=max(args.rows // 10, 1), row_group_rows=max(args.rows // 40, 1),
        ),
        root / "data",
    )


def write_spec(root: Path, name: str, user_buckets: int, item_buckets: int) -> Path:
    text = Path(load_spec("synthetic").origin).read_text()
    text = text.replace("path: synthetic/*.parquet", f"path: {root / 'data'}/*.parquet")
    text = text.replace("hash_buckets: 262144", f"hash_buckets: {user_buckets}")
    text = text.replace("hash_buckets: 131072", f"hash_buckets: {item_buckets}")
    path = root / f"{name}.yaml"
    path.write_text(text)
    return path


def table_mb(run: Path, dim: int) -> float:
    schema = json.loads((run / "schema.json").read_text())
    rows = sum(f["vocab_size"] for f in schema["sparse"]) + sum(s["vocab_size"] for s in schema.get("sequences", []))
    return rows * dim * 4 / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/sharded_scale")
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--users", type=int, default=30_000)
    ap.add_argument("--items", type=int, default=8_000)
    ap.add_argument("--big-user-buckets", type=int, default=2**21)
    ap.add_argument("--big-item-buckets", type=int, default=2**19)
    ap.add_argument("--small-user-buckets", type=int, default=2**10)
    ap.add_argument("--small-item-buckets", type=int, default=2**8)
    ap.add_argument("--embed-dim", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--budget-mb", type=int, default=200, help="per-rank budget for table shards + optimiser state")
    ap.add_argument("--embedding-lr", type=float, default=0.05, help="Adagrad rate of the sharded tables")
    args = ap.parse_args()

    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    make_data(root, args)
    big = write_spec(root, "big", args.big_user_buckets, args.big_item_buckets)
    small = write_spec(root, "small", args.small_user_buckets, args.small_item_buckets)
    bindir = Path(sys.executable).parent
    common = [
        "--model", "shared_bottom", "--seed", "0", "--epochs", str(args.epochs), "--device", "cpu", "--stream",
        "--set", "train.batch_size=1024", "--set", "train.patience=5", "--set", "train.progress=false",
        "--set", "train.num_threads=1", "--set", f"model.embed_dim={args.embed_dim}",
    ]
    variants = {
        "plain-big": [str(big)],
        "sharded-big": [
            str(big), "--set", "train.embeddings=torchrec",
            "--set", "train.sharding=user_id:row_wise,item_id:row_wise,*:data_parallel",
            "--set", f"train.shard_memory_mb={args.budget_mb}", "--set", f"train.embedding_lr={args.embedding_lr}",
            "--set", "train.consolidate=false",
        ],
        "hashed-small": [str(small)],
        # the same TorchRec path and Adagrad as sharded-big on the small tables: what collisions cost, alone
        "hashed-small-torchrec": [
            str(small), "--set", "train.embeddings=torchrec", "--set", "train.sharding=*:data_parallel",
            "--set", f"train.embedding_lr={args.embedding_lr}", "--set", "train.consolidate=false",
        ],
    }
    results = {}
    for name, extra in variants.items():
        run = root / name
        done = run / "metrics.json"
        if not done.exists():
            shutil.rmtree(run, ignore_errors=True)
            cmd = [str(bindir / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "msmtrec", "train",
                   "--data", *extra[:1], *common, *extra[1:], "--out", str(run)]
            start = time.perf_counter()
            rc, peaks = run_with_peak_rss(cmd, root / f"{name}.log")
            if rc != 0:
                print(f"{name}: failed (exit {rc}); see {root / f'{name}.log'}", file=sys.stderr)
                return 1
            (run / "peak_rss.json").write_text(json.dumps(
                {"per_rank_mb": sorted(peaks.values()), "wall_s": time.perf_counter() - start}
            ))
        m = json.loads(done.read_text())
        rss = json.loads((run / "peak_rss.json").read_text())
        results[name] = {
            "table_mb": round(table_mb(run, args.embed_dim), 1),
            "peak_rss_mb_max_rank": round(max(rss["per_rank_mb"]), 1),
            "peak_rss_mb_ranks": [round(x, 1) for x in rss["per_rank_mb"]],
            "samples_per_second": m["samples_per_second"],
            "wall_s": round(rss["wall_s"], 1),
            "test_mean_auc": round(m["mean_auc"], 4),
            "test_click_auc": round(m["overall"]["click"]["auc"], 4),
            "test_purchase_auc": round(m["overall"]["purchase"]["auc"], 4),
        }

    # the budget is real: the same tables placed whole on one rank (table-wise) do not fit it
    refused = root / "table-wise-refused.log"
    if not refused.exists() or "no sharding plan fits" not in refused.read_text():
        cmd = [str(bindir / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "msmtrec", "train",
               "--data", str(big), *common, "--set", "train.embeddings=torchrec",
               "--set", "train.sharding=user_id:table_wise,item_id:table_wise,*:data_parallel",
               "--set", f"train.shard_memory_mb={args.budget_mb}", "--out", str(root / "table-wise-refused")]
        run_with_peak_rss(cmd, refused)
        shutil.rmtree(root / "table-wise-refused", ignore_errors=True)
    lines = [x for x in refused.read_text().splitlines() if "no sharding plan fits" in x]
    print("table-wise under the same budget:", lines[0][:300] if lines else "NOT refused (see the log)")

    # the sharded run, consolidated offline, must score the same in the plain form export/predict/serve load
    sharded = root / "sharded-big"
    if not (sharded / "model.pt").exists():
        subprocess.run([sys.executable, "-m", "msmtrec.training.sharding", "consolidate", str(sharded)], check=True)
    evaluated = root / "sharded-big-consolidated.json"
    subprocess.run(
        [str(bindir / "msmtrec"), "evaluate", str(sharded), "--device", "cpu", "--output", str(evaluated)],
        check=True, capture_output=True,
    )
    results["sharded-big"]["consolidated_test_mean_auc"] = round(json.loads(evaluated.read_text())["mean_auc"], 4)

    (root / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    cols = ["table_mb", "peak_rss_mb_max_rank", "peak_rss_mb_ranks", "samples_per_second", "wall_s",
            "test_mean_auc", "test_click_auc", "test_purchase_auc", "consolidated_test_mean_auc"]
    print("| run | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
