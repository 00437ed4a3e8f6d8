"""Serving backends: the TorchScript graph (the service's default) predicts what eager PyTorch predicts
for every registered model, at every batch size and scenario mix; a disagreeing graph is refused; and
``--backend auto`` says so when it falls back to eager."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msmtrec.cli.serve import _use_backend
from msmtrec.errors import MsmtrecError
from msmtrec.models.base import registered_models
from msmtrec.serving import export
from msmtrec.serving.scorer import Scorer
from msmtrec.serving.testing import make_run_dir, raw_rows


@pytest.fixture(scope="module")
def rows() -> object:
    frame = raw_rows(300)
    assert frame["segment"].nunique() == 3  # every scenario is in the mix
    return frame


@pytest.mark.parametrize("name", registered_models())
def test_torchscript_backend_matches_eager(name: str, rows: object, tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / name, name)
    eager, traced = Scorer.load(run), Scorer.load(run)
    traced.use_torchscript()
    assert traced.backend == "torchscript"
    for n in (1, 2, 37, 300):
        want = eager.score_frame(rows.iloc[:n]).predictions
        got = traced.score_frame(rows.iloc[:n]).predictions
        for task in eager.task_names:
            assert got[task].shape == (n,)
            np.testing.assert_allclose(got[task], want[task], rtol=1e-5, atol=1e-6)
    one = rows[rows["segment"] == rows["segment"].iloc[0]].iloc[:50]  # a one-scenario batch, as the service sends
    want, got = eager.score_frame(one).predictions, traced.score_frame(one).predictions
    for task in eager.task_names:
        np.testing.assert_allclose(got[task], want[task], rtol=1e-5, atol=1e-6)


def test_torchscript_graph_of_other_weights_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = Scorer.load(make_run_dir(tmp_path / "a", "shared_bottom"))
    other = Scorer.load(make_run_dir(tmp_path / "b", "shared_bottom", seed=7))
    original = export.trace_torchscript
    monkeypatch.setattr(export, "trace_torchscript", lambda model, scenario=None: original(other.model, scenario))
    with pytest.raises(MsmtrecError, match="differ from eager"):
        scorer.use_torchscript()
    assert scorer.backend == "torch"


def test_auto_backend_falls_back_to_eager_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    scorer = Scorer.load(make_run_dir(tmp_path / "a", "shared_bottom"))
    _use_backend(scorer, "auto", None)
    assert scorer.backend == "torchscript"

    def cannot_trace() -> None:
        raise MsmtrecError("TorchScript tracing failed for my_model: RuntimeError: data-dependent shape")

    fresh = Scorer(scorer.run)
    monkeypatch.setattr(fresh, "use_torchscript", cannot_trace)
    _use_backend(fresh, "auto", None)
    assert fresh.backend == "torch"
    assert "serving with eager PyTorch" in capsys.readouterr().out
    with pytest.raises(MsmtrecError, match="--backend must be one of"):
        _use_backend(fresh, "tensorrt", None)
    with pytest.raises(MsmtrecError, match="--onnx-file needs --backend onnx"):
        _use_backend(fresh, "auto", tmp_path / "m.onnx")
