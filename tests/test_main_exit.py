"""``python -m msmtrec`` leaves with ``os._exit`` after a command: output is still flushed, codes are kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "msmtrec", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_fast_exit_flushes_output_and_keeps_files(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = _run("train", "--data", "planted:600", "--model", "shared_bottom", "--epochs", "1", "--out", str(out),
                "--set", "train.progress=false")
    assert done.returncode == 0, done.stderr[-2000:]
    # stdout is a pipe (block-buffered): the table and the last line arrive only if the exit flushed them
    assert done.stdout.rstrip().endswith(f"run written to {out}")
    assert "mean AUC" in done.stdout
    assert json.loads((out / "metrics.json").read_text())["split"] == "test"


def test_errors_still_exit_2() -> None:
    done = _run("train", "--data", "/no/such/spec.yaml", "--model", "mmoe", "--out", "/tmp/never-written")
    assert done.returncode == 2 and done.stderr.startswith("error:")
