"""Two one-thread ranks (torchrun) against one two-thread process, interleaved, on the shipped Hillstrom data.

Each round trains every (model, layout) once, in turn, so slow phases of a shared host hit every layout
alike; the table gives min and median over rounds of the trainer's samples/s (training plus validation,
from ``metrics.json``) and of the command's wall time (start-up and test evaluation included).

    python benchmarks/threads_vs_ranks.py --rounds 3 --epochs 2 --out runs/threads
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

LAYOUTS = {
    "1 process x 1 thread": (1, 1),
    "1 process x 2 threads": (1, 2),
    "2 ranks x 1 thread (torchrun)": (2, 1),
}


def command(launcher: Path, model: str, procs: int, threads: int, epochs: int, out: Path,
            sample: int | None) -> list[str]:
    args = ["train", "--data", "hillstrom", "--model", model, "--epochs", str(epochs), "--threads", str(threads),
            "--set", "train.patience=99", "--set", "train.progress=false", "--out", str(out)]
    args += ["--sample", str(sample)] if sample else []
    if procs == 1:
        return [sys.executable, str(launcher), *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            f"--nproc_per_node={procs}", str(launcher), *args]


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess | None:
    """Run ``cmd`` in its own session; on timeout kill the whole group (torchrun's workers too), return None."""
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            return None
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mmoe,hef")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--sample", type=int, default=None, help="Rows of Hillstrom to use (default: all 64,000).")
    ap.add_argument("--timeout", type=float, default=600, help="Seconds before a run counts as collapsed.")
    ap.add_argument("--out", type=Path, default=Path("runs/threads"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    launcher = a.out / "msmtrec_main.py"
    launcher.write_text("import sys\nfrom msmtrec.cli import main\nsys.exit(main())\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in range(a.rounds):
        for model in a.models.split(","):
            for name, (procs, threads) in LAYOUTS.items():
                run = a.out / f"{model}-{procs}x{threads}-r{r}"
                shutil.rmtree(run, ignore_errors=True)
                t0 = time.perf_counter()
                done = _run(command(launcher, model, procs, threads, a.epochs, run, a.sample), env, a.timeout)
                if done is None:
                    # A collapsed layout: count it as zero throughput and the timeout as its wall time.
                    results.setdefault((model, name), []).append((0.0, a.timeout))
                    print(f"round {r} {model:5s} {name:30s} did not finish in {a.timeout:.0f} s "
                          f"(load {os.getloadavg()[0]:.1f})", flush=True)
                    continue
                wall = time.perf_counter() - t0
                if done.returncode != 0:
                    sys.exit(f"{model} {name} failed:\n{done.stderr[-3000:]}")
                sps = json.loads((run / "metrics.json").read_text())["samples_per_second"]
                results.setdefault((model, name), []).append((sps, wall))
                load = os.getloadavg()[0]
                print(f"round {r} {model:5s} {name:30s} {sps:10,.0f} samples/s {wall:6.1f} s  (load {load:.1f})",
                      flush=True)
    print(f"\n{'model':6s} {'layout':30s} {'samples/s min':>14s} {'median':>10s} {'wall s min':>11s} {'median':>7s}")
    for (model, name), vals in results.items():
        sps, wall = [v[0] for v in vals], [v[1] for v in vals]
        print(f"{model:6s} {name:30s} {min(sps):14,.0f} {statistics.median(sps):10,.0f} "
              f"{min(wall):11.1f} {statistics.median(wall):7.1f}")


if __name__ == "__main__":
    main()
