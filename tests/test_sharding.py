"""TorchRec embedding form and sharded training (``train.embeddings=torchrec``).

Everything that imports TorchRec is skipped where it is not installed (CI installs only ``.[dev]``); the
config checks below run everywhere. The two-process runs are ``slow`` (torchrun start-up and TorchRec's
planner take most of a minute on 2 shared cores).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from msmtrec.data.schema import random_batch, synthetic_schema
from msmtrec.errors import ConfigError
from msmtrec.models.base import build_model
from msmtrec.training.config import TrainConfig

try:
    import torchrec  # noqa: F401

    HAVE_TORCHREC = True
except Exception:  # ImportError, or fbgemm failing to load its kernels
    HAVE_TORCHREC = False

needs_torchrec = pytest.mark.skipif(not HAVE_TORCHREC, reason="torchrec not installed (make torchrec)")
HERE = Path(__file__).parent


# ------------------------------------------------------------------------------------ config (no torchrec)


def test_sharding_plan_from_set_string() -> None:
    cfg = TrainConfig(embeddings="torchrec", sharding="user_id:row_wise, *:data_parallel")
    assert cfg.sharding == {"user_id": "row_wise", "*": "data_parallel"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sharding": "user_id:rowwise"}, "not one of"),
        ({"sharding": "user_id"}, "field:sharding_type"),
        ({"embeddings": "fbgemm"}, "train.embeddings"),
        ({"embedding_optimizer": "lamb"}, "train.embedding_optimizer"),
    ],
)
def test_bad_sharding_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)


def test_torchrec_missing_is_a_one_line_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from msmtrec.training import run

    monkeypatch.setitem(sys.modules, "torchrec", None)  # import torchrec → ImportError
    monkeypatch.delitem(sys.modules, "msmtrec.training.sharding", raising=False)
    monkeypatch.delitem(sys.modules, "msmtrec.layers.torchrec_embedding", raising=False)
    with pytest.raises(ConfigError, match="make torchrec"):
        run.train(tmp_path / "r", data="planted:200", model_name="shared_bottom", sets={"train.embeddings": "torchrec"})


# ------------------------------------------------------------------------------------ the TorchRec form


@needs_torchrec
@pytest.mark.parametrize("model_name", ["shared_bottom", "hef", "single_task"])
def test_torchrec_form_computes_what_the_plain_form_does(model_name: str) -> None:
    from msmtrec.layers.torchrec_embedding import TorchRecFieldEmbedding, plain_state_dict, to_torchrec

    schema = synthetic_schema(n_sparse=3, vocab=30, n_dense=2, seq_len=4)
    torch.manual_seed(0)
    plain = build_model(model_name, schema, {"embed_dim": 8}).eval()
    form = to_torchrec(copy.deepcopy(plain)).eval()
    assert any(isinstance(m, TorchRecFieldEmbedding) for m in form.modules())
    batch = random_batch(schema, 32, torch.Generator().manual_seed(1))
    batch["seq:hist"][:5] = 0  # empty lists pool to 0 in both forms
    batch["seq:hist"][5:, 2:] = 0
    with torch.no_grad():
        want, got = plain(batch), form(batch)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6)
    # consolidation: the TorchRec-form weights are exactly the plain state dict
    back = plain_state_dict(form.state_dict())
    ref = plain.state_dict()
    assert set(back) == set(ref)
    for key in ref:
        torch.testing.assert_close(back[key], ref[key], rtol=0, atol=0)
    fresh = build_model(model_name, schema, {"embed_dim": 8})
    fresh.load_state_dict(back, strict=True)


@needs_torchrec
def test_tables_on_meta_allocate_nothing() -> None:
    from msmtrec.layers.embedding import tables_on
    from msmtrec.layers.torchrec_embedding import to_torchrec

    schema = synthetic_schema(n_sparse=2, vocab=10_000_000, n_dense=1)
    with tables_on("meta"):
        model = build_model("shared_bottom", schema, {"embed_dim": 64})
    assert model.embedding.sparse_table.weight.is_meta  # 20M x 64 floats would be 5 GB
    to_torchrec(model, device="meta")
    tables = list(model.embedding.ebc.embedding_bags.values())
    assert [t.weight.shape[0] for t in tables] == [10_000_000, 10_000_000]
    assert all(t.weight.is_meta for t in tables)


# ------------------------------------------------------------------------------------ two processes


def _torchrun(args: list[str], env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)


@needs_torchrec
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["row_wise", "table_wise", "column_wise", "data_parallel"])
def test_sharded_forward_and_consolidation_equal_plain(kind: str) -> None:
    out = _torchrun([str(HERE / "torchrec_worker.py"), kind])
    assert out.returncode == 0, out.stderr[-4000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("OK ")]
    assert line, out.stdout[-2000:]
    assert float(line[0].split()[2]) == 0.0  # gathered weights are the plain ones bit for bit
    step = [x for x in out.stdout.splitlines() if x.startswith("STEP ")]
    assert step and float(step[0].split()[1]) < 1e-6  # one SGD step on the ranks' mean gradient, as plain


ARGS = [
    "--data", "planted:3000", "--model", "shared_bottom", "--seed", "0", "--epochs", "4", "--device", "cpu",
    "--set", "train.batch_size=128", "--set", "train.lr=0.01", "--set", "train.patience=4",
    "--set", "train.progress=false", "--set", "train.checkpoint_every=5",
    "--set", "model.embed_dim=8", "--set", "model.bottom_dims=32", "--set", "model.tower_dims=16",
]
SHARDED = ["--set", "train.embeddings=torchrec", "--set", "train.sharding=*:row_wise",
           "--set", "train.embedding_lr=0.05"]


@needs_torchrec
@pytest.mark.slow
def test_row_wise_sharded_training_matches_plain_and_resumes_after_kill(tmp_path: Path) -> None:
    launcher = tmp_path / "msmtrec_main.py"
    launcher.write_text("import sys\nfrom msmtrec.cli import main\nsys.exit(main())\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, str(launcher), "train", *ARGS, "--out", str(tmp_path / "plain")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-4000:]
    full = _torchrun([str(launcher), "train", *ARGS, *SHARDED, "--out", str(tmp_path / "sharded")])
    assert full.returncode == 0, full.stderr[-4000:]
    a = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    b = json.loads((tmp_path / "sharded" / "metrics.json").read_text())
    assert b["world_size"] == 2 and b["overall"]["click"]["rows"] == a["overall"]["click"]["rows"] == 300
    assert a["mean_auc"] > 0.75 and b["mean_auc"] > 0.75  # both learned
    assert abs(a["mean_auc"] - b["mean_auc"]) < 0.03  # the bound the plain DDP test uses
    assert abs(a["overall"]["value"]["rmse"] - b["overall"]["value"]["rmse"]) < 0.1 * a["overall"]["value"]["rmse"]

    # the consolidated model.pt is a plain run: it loads without torchrec layers and scores the same
    from msmtrec.training import run

    again = run.evaluate(tmp_path / "sharded", device="cpu")
    assert again["mean_auc"] == pytest.approx(b["mean_auc"], abs=1e-6)

    # killed mid-epoch (SIGKILL after 30 steps) and resumed: the same end as the uninterrupted run
    killer = Path(__file__).parent / "kill_after.py"  # SIGKILL after 30 steps, injected by the launcher
    killed = _torchrun([str(killer), "30", "train", *ARGS, *SHARDED, "--out", str(tmp_path / "killed")])
    assert killed.returncode != 0
    assert not (tmp_path / "killed" / "metrics.json").exists()
    resumed = _torchrun([str(launcher), "train", "--resume", str(tmp_path / "killed")])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    c = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert c["mean_auc"] == pytest.approx(b["mean_auc"], abs=1e-9)
    assert c["overall"]["value"]["rmse"] == pytest.approx(b["overall"]["value"]["rmse"], abs=1e-9)
    # only the folders last.pt names are left
    assert len(list((tmp_path / "killed" / "sharded").iterdir())) == 2


@needs_torchrec
@pytest.mark.slow
def test_sharded_training_on_a_stream(tmp_path: Path) -> None:
    """``--stream`` feeds the sharded trainer: each rank reads its own row groups, lookups are sharded."""
    from msmtrec.data.spec import load_spec
    from msmtrec.data.synth import SynthConfig, synthesize

    synthesize(SynthConfig(rows=20_000, users=2_000, items=1_000, rows_per_file=2_048, row_group_rows=1_024, seed=3),
               tmp_path / "data")
    text = Path(load_spec("synthetic").origin).read_text()
    text = text.replace("path: synthetic/*.parquet", f"path: {tmp_path / 'data'}/*.parquet")
    (tmp_path / "spec.yaml").write_text(text)
    launcher = tmp_path / "msmtrec_main.py"
    launcher.write_text("import sys\nfrom msmtrec.cli import main\nsys.exit(main())\n")
    out = _torchrun([
        str(launcher), "train", "--data", str(tmp_path / "spec.yaml"), "--stream", "--model", "shared_bottom",
        "--epochs", "2", "--device", "cpu", "--set", "train.batch_size=512", "--set", "train.progress=false",
        "--set", "model.embed_dim=8", *SHARDED[:2], "--set", "train.sharding=user_id:row_wise,item_id:row_wise",
        "--out", str(tmp_path / "run"),
    ])
    assert out.returncode == 0, out.stderr[-4000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epochs"] == 2
    from msmtrec import runs

    loaded = runs.load_run(tmp_path / "run", require_preprocessor=True)  # the consolidated run is a plain run
    assert loaded.model.embedding.sparse_table.weight.shape[0] == sum(f.vocab_size for f in loaded.model.schema.sparse)
    # predict and export with TorchRec made unimportable: the run needs nothing of it any more
    plain = tmp_path / "no_torchrec_main.py"
    plain.write_text("import sys\nsys.modules['torchrec'] = None\nfrom msmtrec.cli import main\nsys.exit(main())\n")
    shard_file = sorted((tmp_path / "data").glob("*.parquet"))[-1]
    for args in (["predict", str(tmp_path / "run"), "-i", str(shard_file), "-o", str(tmp_path / "p.parquet")],
                 ["export", str(tmp_path / "run"), "-f", "torchscript", "-o", str(tmp_path / "m.ts")]):
        done = subprocess.run([sys.executable, str(plain), *args], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "p.parquet").stat().st_size > 0 and (tmp_path / "m.ts").stat().st_size > 0
