"""Two-process DistributedDataParallel training on CPU (gloo) lands close to a single-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

ARGS = [
    "--data", "planted:3000", "--model", "shared_bottom", "--seed", "0", "--epochs", "4", "--device", "cpu",
    "--set", "train.batch_size=128", "--set", "train.lr=0.01", "--set", "train.patience=4",
    "--set", "train.progress=false",
    "--set", "model.embed_dim=8", "--set", "model.bottom_dims=32", "--set", "model.tower_dims=16",
]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch without gloo")
def test_torchrun_two_processes_close_to_single(tmp_path: Path) -> None:
    launcher = tmp_path / "msmtrec_main.py"
    launcher.write_text("import sys\nfrom msmtrec.cli import main\nsys.exit(main())\n")
    single = _run([sys.executable, str(launcher), "train", *ARGS, "--out", str(tmp_path / "single")])
    assert single.returncode == 0, single.stderr
    ddp = _run([
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
        str(launcher), "train", *ARGS, "--out", str(tmp_path / "ddp"),
    ])
    assert ddp.returncode == 0, ddp.stderr[-4000:]
    a = json.loads((tmp_path / "single" / "metrics.json").read_text())
    b = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert a["world_size"] == 1 and b["world_size"] == 2
    # every test row is scored once, on the full test split
    assert b["overall"]["click"]["rows"] == a["overall"]["click"]["rows"] == 300
    assert a["mean_auc"] > 0.75 and b["mean_auc"] > 0.75  # both actually learned
    assert abs(a["mean_auc"] - b["mean_auc"]) < 0.03
    assert abs(a["overall"]["value"]["rmse"] - b["overall"]["value"]["rmse"]) < 0.1 * a["overall"]["value"]["rmse"]
    for name in ("config.yaml", "model.pt", "last.pt", "history.csv", "metrics.json", "schema.json"):
        assert (tmp_path / "ddp" / name).exists(), name
    history = (tmp_path / "ddp" / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + b["epochs"]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch without gloo")
def test_shutdown_frees_a_ddp_wrapper_left_in_a_reference_cycle_before_destroying_the_group(tmp_path: Path) -> None:
    """A DDP wrapper in a reference cycle outlives ``fit`` until the garbage collector runs; if that happens at
    interpreter exit, gloo's reducer dies after its group and the rank aborts ("terminate called without an
    active exception", exit -6: seen in ``test_torchrun_two_processes_close_to_single`` on a loaded host).
    ``shutdown_distributed`` must free such wrappers while the group still exists."""
    import gc
    import weakref

    import torch
    from torch.nn.parallel import DistributedDataParallel

    from msmtrec.training.distributed import shutdown_distributed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    enabled = gc.isenabled()
    gc.disable()  # only the shutdown may collect the cycle
    try:
        wrapper = DistributedDataParallel(torch.nn.Linear(2, 1))
        wrapper.loss_out = wrapper(torch.ones(4, 2)).sum()  # keep the autograd graph; then close a cycle
        wrapper.self_ref = wrapper
        alive = weakref.ref(wrapper)
        del wrapper
        assert alive() is not None  # only a collection can free it now
        shutdown_distributed()
        assert alive() is None and not dist.is_initialized()
    finally:
        if enabled:
            gc.enable()
        if dist.is_initialized():
            dist.destroy_process_group()
