"""Start-up time of ``msmtrec`` commands: each command run N times, interleaved, min and median wall time.

Most of a short command's time is importing; this shows what a command pays before doing its work, and
which heavy modules it loaded (a command should import only what it uses).

    python benchmarks/startup_time.py --runs 10
    python benchmarks/startup_time.py --runs 10 --src /path/to/old/src --src src   # two trees, interleaved
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "pandas", "pyarrow", "numpy", "matplotlib", "onnx", "onnxruntime", "fastapi", "uvicorn",
         "optuna", "tensorboard", "mlflow", "rich")
PROBE = (
    "import sys, atexit\n"
    "atexit.register(lambda: print('LOADED', ','.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr))\n"
    "from msmtrec.cli import main\nsys.argv[0] = 'msmtrec'\nmain(sys.argv[1:])\n"
)


def commands(tmp: Path) -> dict[str, list[str]]:
    run = tmp / "run"
    return {
        "msmtrec --help": ["--help"],
        "msmtrec train --help": ["train", "--help"],
        "msmtrec train (planted:300, 1 epoch)": [
            "train", "--data", "planted:300", "--model", "shared_bottom", "--epochs", "1",
            "--set", "train.progress=false", "--out", str(run)],
        "msmtrec evaluate (that run)": ["evaluate", str(run)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--src", action="append", default=None,
                    help="Source tree to put first on PYTHONPATH (repeatable: trees are interleaved); default: as is.")
    a = ap.parse_args()
    trees = a.src or [None]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        probe = tmp / "probe.py"
        probe.write_text(PROBE.format(heavy=HEAVY))
        cmds = commands(tmp)
        times: dict[tuple[str, str], list[float]] = {}
        loaded: dict[tuple[str, str], str] = {}
        for _ in range(a.runs):
            for name, args in cmds.items():
                for tree in trees:
                    env = {**os.environ, "OMP_NUM_THREADS": "1"}
                    if tree:
                        env["PYTHONPATH"] = os.pathsep.join(filter(None, (tree, os.environ.get("PYTHONPATH"))))
                    if "train (" in name:
                        subprocess.run(["rm", "-rf", str(tmp / "run")], check=True)
                    t0 = time.perf_counter()
                    done = subprocess.run([sys.executable, str(probe), *args], env=env, capture_output=True,
                                          text=True)
                    key = (name, tree or "")
                    times.setdefault(key, []).append(time.perf_counter() - t0)
                    if done.returncode != 0:
                        sys.exit(f"{name} failed:\n{done.stderr[-2000:]}")
                    loaded[key] = next((ln[7:] for ln in done.stderr.splitlines() if ln.startswith("LOADED ")), "")
    print(f"{'command':38s} {'tree':24s} {'min s':>6s} {'median s':>9s}  heavy modules loaded")
    for (name, tree), ts in times.items():
        print(f"{name:38s} {tree[-24:]:24s} {min(ts):6.2f} {statistics.median(ts):9.2f}  {loaded[(name, tree)]}")


if __name__ == "__main__":
    main()
