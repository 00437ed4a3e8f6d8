"""Training on a streamed Parquet directory through the CLI, in one process and under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from msmtrec.data.spec import load_spec
from msmtrec.data.synth import SynthConfig, synthesize

ARGS = [
    "--model", "shared_bottom", "--seed", "0", "--epochs", "2", "--device", "cpu", "--stream",
    "--set", "train.batch_size=512", "--set", "train.progress=false", "--set", "train.scenario_weighting=sqrt_inverse",
    "--set", "model.embed_dim=8", "--set", "model.bottom_dims=32", "--set", "model.tower_dims=16",
]


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20k simulated rows in 10 shards, and a copy of the shipped synthetic spec pointing at them."""
    root = tmp_path_factory.mktemp("stream")
    synthesize(
        SynthConfig(rows=20_000, users=2_000, items=1_000, rows_per_file=2_048, row_group_rows=1_024, seed=3),
        root / "data",
    )
    text = load_spec("synthetic").origin
    spec = Path(text).read_text().replace("path: synthetic/*.parquet", f"path: {root / 'data'}/*.parquet")
    (root / "spec.yaml").write_text(spec)
    return root / "spec.yaml"


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_streamed_training_writes_a_run_and_evaluates(spec_file: Path, tmp_path: Path) -> None:
    from msmtrec.cli import main
    from msmtrec.training import run

    out = tmp_path / "run"
    main(["train", "--data", str(spec_file), *ARGS, "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    cfg = (out / "config.yaml").read_text()
    assert "stream: true" in cfg
    assert metrics["overall"]["click"]["rows"] > 0 and metrics["overall"]["click"]["auc"] is not None
    again = run.evaluate(out)  # re-reads the test files with the run's own encoders
    assert again["overall"]["click"]["auc"] == pytest.approx(metrics["overall"]["click"]["auc"], abs=1e-6)


def test_stream_refuses_sample(spec_file: Path, tmp_path: Path) -> None:
    from msmtrec.errors import ConfigError
    from msmtrec.training import run

    with pytest.raises(ConfigError, match="--sample"):
        run.train(tmp_path / "r", data=str(spec_file), model_name="shared_bottom", sample=100, stream=True)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch without gloo")
def test_streamed_training_under_torchrun(spec_file: Path, tmp_path: Path) -> None:
    launcher = tmp_path / "msmtrec_main.py"
    launcher.write_text("import sys\nfrom msmtrec.cli import main\nsys.exit(main())\n")
    ddp = _run([
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
        str(launcher), "train", "--data", str(spec_file), *ARGS, "--out", str(tmp_path / "ddp"),
    ])
    assert ddp.returncode == 0, ddp.stderr[-4000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["overall"]["click"]["auc"] is not None
