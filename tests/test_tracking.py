"""Experiment tracking: TensorBoard event files in every run, MLflow when asked; both readable back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from msmtrec.data.sources import load_planted
from msmtrec.errors import ConfigError
from msmtrec.models import build_model
from msmtrec.training import TrainConfig, Trainer
from msmtrec.training.tracking import TENSORBOARD_DIR, Tracker, gate_summaries, sample_batch


def _fit(run_dir: Path | None, model_name: str = "mmoe", **train):  # noqa: ANN003, ANN202
    data = load_planted(1200)
    torch.manual_seed(0)
    model = build_model(model_name, data.schema, {"embed_dim": 4})
    cfg = TrainConfig(batch_size=128, max_epochs=2, patience=9, progress=False, log_every=2, **train)
    Trainer(cfg, seed=0, run_dir=run_dir).fit(model, data.splits)
    return data, model


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_event_files_hold_steps_epochs_cells_and_gates(tmp_path: Path) -> None:
    data, _ = _fit(tmp_path / "run")
    scalars = _scalars(tmp_path / "run" / TENSORBOARD_DIR)
    steps_per_epoch = -(-960 // 128)  # 80 % of 1,200 rows in batches of 128
    # per step (every log_every=2 steps): total and per-task loss, learning rate, throughput
    for tag in ("train/loss/total", "train/loss/click", "train/loss/buy", "train/loss/value", "train/lr/dense",
                "train/samples_per_second"):
        assert [s for s, _ in scalars[tag]] == list(range(2, 2 * steps_per_epoch + 1, 2)), tag
    assert all(v == pytest.approx(1e-3) for _, v in scalars["train/lr/dense"])
    assert all(v > 0 for _, v in scalars["train/samples_per_second"])
    # per epoch: every scenario x task validation cell, overall, summaries, train loss
    for scen in [*data.schema.scenarios, "overall"]:
        assert [s for s, _ in scalars[f"valid/{scen}/click/auc"]] == [1, 2]
        assert f"valid/{scen}/value/rmse" in scalars
    assert [s for s, _ in scalars["valid/monitor"]] == [1, 2]
    assert "epoch/train_loss/click" in scalars and "valid/mean_auc" in scalars
    # MMoE's gates: one mean weight per expert and task gate; the weights of one gate sum to 1
    gates = sorted(t for t in scalars if t.startswith("gates/"))
    assert gates, "no gate summaries for MMoE"
    gate0 = [t for t in gates if t.startswith(gates[0].rsplit("/", 1)[0] + "/")]
    assert len(gate0) > 1
    assert sum(scalars[t][-1][1] for t in gate0) == pytest.approx(1.0, abs=1e-4)


def test_no_run_dir_or_tensorboard_off_writes_nothing(tmp_path: Path) -> None:
    _fit(None)
    _fit(tmp_path / "run", tensorboard=False)
    assert not (tmp_path / "run" / TENSORBOARD_DIR).exists()


def test_gate_summaries_of_a_model_without_gates_is_empty() -> None:
    data = load_planted(300)
    model = build_model("shared_bottom", data.schema, {"embed_dim": 4})
    assert gate_summaries(model, sample_batch(data.splits["valid"], torch.device("cpu"))) == {}


def test_unknown_tracker_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="tracking"):
        TrainConfig(tracking="wandb")


def test_mlflow_run_records_params_metrics_and_the_run_folder(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    mlflow = pytest.importorskip("mlflow")
    # A local file store: no database migrations to wait for (MLflow 3 wants an opt-in for it).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.chdir(tmp_path)
    uri = (tmp_path / "mlruns").as_uri()
    _fit(tmp_path / "run", tracking="mlflow", mlflow_uri=uri)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    runs = client.search_runs(experiment_ids=["0"])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["model_class"] == "MMoE" and run.data.params["train/batch_size"] == "128"
    assert "valid/overall/click/auc" in run.data.metrics and "train/loss/click" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "valid/monitor")
    assert [m.step for m in history] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert {"run/model.pt", "run/history.csv", "run/tensorboard"} <= artifacts


def test_mlflow_key_sanitising() -> None:
    t = Tracker(None)
    assert not t.active
    from msmtrec.training.tracking import _mlflow_key

    assert _mlflow_key("gates/level0/task:click/expert1") == "gates/level0/task_click/expert1"
