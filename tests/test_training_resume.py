"""Kill a training process with SIGKILL mid-epoch, resume it, and get the uninterrupted run's metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

TIMING = {"train_seconds", "samples_per_second"}
# planted:2000 -> 1600 training rows, 13 steps per epoch at batch 128; checkpoints every 5 steps.
ARGS = [
    "--data", "planted:2000", "--model", "shared_bottom", "--seed", "3", "--epochs", "3",
    "--set", "train.batch_size=128", "--set", "train.lr=0.01", "--set", "train.checkpoint_every=5",
    "--set", "train.patience=5", "--set", "train.progress=false",
    "--set", "model.embed_dim=8", "--set", "model.bottom_dims=32", "--set", "model.tower_dims=16",
]


KILL_AFTER = Path(__file__).parent / "kill_after.py"


def _msmtrec(*args: str, kill_after: int | None = None) -> subprocess.CompletedProcess:
    code = "import sys; from msmtrec.cli import main; sys.exit(main(sys.argv[1:]))"
    launch = [str(KILL_AFTER), str(kill_after)] if kill_after else ["-c", code]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *launch, *args], env=env, capture_output=True, text=True, timeout=300)


def _without_timing(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMING}


def test_resume_after_sigkill_matches_uninterrupted(tmp_path: Path) -> None:
    full = _msmtrec("train", *ARGS, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr

    # Dies at step 22 (epoch 2, batch 9); the last checkpoint is step 20, so steps 21-22 are redone.
    killed = _msmtrec("train", *ARGS, "--out", str(tmp_path / "run"), kill_after=22)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert (state["state"]["epoch"], state["state"]["batch_in_epoch"]) == (1, 7)
    assert not list((tmp_path / "run").glob(".*.tmp"))  # no torn temp files left behind as checkpoints

    resumed = _msmtrec("train", "--resume", str(tmp_path / "run"))
    assert resumed.returncode == 0, resumed.stderr
    assert _without_timing(tmp_path / "run" / "metrics.json") == _without_timing(tmp_path / "full" / "metrics.json")
    assert (tmp_path / "run" / "history.csv").read_text() == (tmp_path / "full" / "history.csv").read_text()
    best_a = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    best_b = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_b)
