"""Export parity: ONNX Runtime and TorchScript match eager PyTorch for every registered model.

Parametrised over ``registered_models()`` so a model added later is covered without touching this file.
Weights are the seeded initialisation of a small config (embed_dim 8): parity is a property of the graph,
not of training, and small models keep ~10 exports within a few minutes on two cores.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from msmtrec.models import registered_models
from msmtrec.runs import load_run
from msmtrec.serving.export import (
    OnnxRunner,
    TorchScriptRunner,
    export_onnx,
    export_run,
    export_torchscript,
    input_names,
)
from msmtrec.serving.testing import make_run_dir, prepared_hillstrom

TOL = 1e-5


@pytest.fixture(scope="module")
def test_batch() -> dict[str, torch.Tensor]:
    prepared = prepared_hillstrom()
    batch = {k: v[:1000] for k, v in prepared.splits["test"].tensors.items() if k != "labels"}
    assert len(batch["scenario"]) == 1000
    return batch


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float((a[k].double() - b[k].double()).abs().max()) for k in b}


@pytest.mark.parametrize("name", registered_models())
def test_export_parity(name: str, tmp_path: Path, test_batch: dict[str, torch.Tensor]) -> None:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    run = load_run(make_run_dir(tmp_path / "run", name))
    model = run.model
    with torch.inference_mode():
        ref = model(test_batch)
    assert list(ref) == list(model.schema.task_names)

    onnx_path = export_onnx(model, tmp_path / f"{name}.onnx")
    onnx_out = OnnxRunner(onnx_path, model.schema)(test_batch)
    diff = _max_diff(onnx_out, ref)
    assert max(diff.values()) <= TOL, f"{name}: ONNX Runtime differs from eager by {diff}"

    ts_path = export_torchscript(model, tmp_path / f"{name}.pt")
    ts_out = TorchScriptRunner(ts_path, model.schema)(test_batch)
    diff = _max_diff(ts_out, ref)
    assert max(diff.values()) <= TOL, f"{name}: TorchScript differs from eager by {diff}"

    # the batch dimension is dynamic: a single row and an odd size work too
    for n in (1, 7):
        small = {k: v[:n] for k, v in test_batch.items()}
        assert _max_diff(OnnxRunner(onnx_path, model.schema)(small), {k: v[:n] for k, v in ref.items()})["visit"] <= TOL


def test_export_cli_writes_model_and_preprocessor(tmp_path: Path) -> None:
    from msmtrec.cli import main

    run_dir = make_run_dir(tmp_path / "run", "shared_bottom")
    out = tmp_path / "exported" / "model.onnx"
    _run_cli(main, ["export", str(run_dir), "--format", "onnx", "--out", str(out)])
    assert out.exists() and out.stat().st_size > 0
    pre = out.with_name("model.onnx.preprocessor.json")
    assert json.loads(pre.read_text())["format"] == "msmtrec-preprocessor/1"
    sig = json.loads(out.with_name("model.onnx.signature.json").read_text())
    assert sig["input_order"] == input_names(load_run(run_dir).model.schema)
    assert sig["output_order"] == ["visit", "conversion", "spend"]

    ts = tmp_path / "exported" / "model.pt"
    _run_cli(main, ["export", str(run_dir), "--format", "torchscript", "--out", str(ts)])
    assert ts.exists() and torch.jit.load(str(ts)) is not None


def test_export_rejects_unknown_format(tmp_path: Path) -> None:
    from msmtrec.errors import MsmtrecError

    run_dir = make_run_dir(tmp_path / "run", "shared_bottom")
    with pytest.raises(MsmtrecError, match="unknown export format"):
        export_run(run_dir, "tflite", tmp_path / "m.tflite")


def test_exported_onnx_names_are_valid_for_sequences() -> None:
    from msmtrec.data.schema import synthetic_schema

    names = input_names(synthetic_schema(seq_len=5))
    assert names == ["sparse", "dense", "scenario", "seq__hist"]
    assert all(n.isidentifier() for n in names)


def test_sequence_model_exports(tmp_path: Path) -> None:
    """A schema with a sequence field (not in Hillstrom) still exports with matching outputs."""
    from msmtrec.data.schema import random_batch, synthetic_schema
    from msmtrec.models import build_model

    schema = synthetic_schema(seq_len=6)
    torch.manual_seed(0)
    model = build_model("shared_bottom", schema, {"embed_dim": 8}).eval()
    batch = random_batch(schema, 64, torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = model(batch)
    out = OnnxRunner(export_onnx(model, tmp_path / "seq.onnx"), schema)(batch)
    assert max(_max_diff(out, ref).values()) <= TOL
    out = TorchScriptRunner(export_torchscript(model, tmp_path / "seq.pt"), schema)(batch)
    assert max(_max_diff(out, ref).values()) <= TOL


def _run_cli(main, argv: list[str]) -> None:  # noqa: ANN001
    try:
        main(argv)
    except SystemExit as e:
        assert e.code in (0, None), f"CLI exited with {e.code}"

