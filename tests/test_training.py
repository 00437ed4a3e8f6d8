"""Trainer core on planted data: loss options, optimiser groups, early stopping, determinism, state files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from msmtrec.config import build_config
from msmtrec.data.dataset import TensorDataset
from msmtrec.data.schema import Task, synthetic_schema
from msmtrec.data.sources import load_planted
from msmtrec.errors import ConfigError
from msmtrec.models import build_model
from msmtrec.training import TrainConfig, Trainer
from msmtrec.training.adam import FusedAdam
from msmtrec.training.loss import MultiTaskLoss, scenario_weights
from msmtrec.training.metrics import monitor_value
from msmtrec.training.trainer import TrainingModule, build_optimizer, embedding_parameters, seed_everything

SMALL = {"embed_dim": 8, "bottom_dims": (32,), "tower_dims": (16,)}


@pytest.fixture(scope="module")
def data():  # noqa: ANN201
    return load_planted(2000)


def _fit(data, seed: int = 0, model_name: str = "shared_bottom", **train):  # noqa: ANN001, ANN003, ANN202
    seed_everything(seed)
    model = build_model(model_name, data.schema, SMALL)
    cfg = TrainConfig(**{"batch_size": 128, "lr": 1e-2, "max_epochs": 3, "progress": False, **train})
    trainer = Trainer(cfg, seed=seed)
    result = trainer.fit(model, {"train": data.splits["train"], "valid": data.splits["valid"]})
    return trainer, result


class ForbiddenSplit(TensorDataset):
    """A split that fails the test if anything reads it."""

    def __init__(self) -> None:
        super().__init__({"x": torch.zeros(3)})

    def batches(self, *a, **k):  # noqa: ANN002, ANN003, ANN201
        raise AssertionError("the trainer touched the test split")

    def shard(self, *a, **k):  # noqa: ANN002, ANN003, ANN201
        raise AssertionError("the trainer touched the test split")

    def __getattribute__(self, name: str):  # noqa: ANN204
        if name == "tensors":
            raise AssertionError("the trainer touched the test split")
        return super().__getattribute__(name)


# ------------------------------------------------------------------------------------------------ loss


def test_scenario_weights_normalised() -> None:
    scen = torch.tensor([0] * 80 + [1] * 15 + [2] * 5)
    inv = scenario_weights(scen, 4, "inverse_frequency")
    assert inv is not None and float(inv[scen].mean()) == pytest.approx(1.0)
    # inverse frequency: every scenario carries the same total weight
    totals = torch.bincount(scen, weights=inv[scen])
    assert torch.allclose(totals, totals[0].expand(3))
    sq = scenario_weights(scen, 4, "sqrt_inverse")
    assert sq is not None and float(sq[scen].mean()) == pytest.approx(1.0)
    assert float(sq[2] / sq[0]) == pytest.approx(math.sqrt(80 / 5))
    assert inv[3] == 0 and scenario_weights(scen, 4, "none") is None


def test_loss_formula_fixed_weights_scenario_weights_and_nan() -> None:
    schema = synthetic_schema(tasks=(Task("c", "binary", weight=2.0), Task("v", "regression")), scenarios=2)
    sw = torch.tensor([1.0, 3.0])
    loss = MultiTaskLoss(schema, [2.0, 0.5], "fixed", sw)
    out = {"c": torch.tensor([0.5, -1.0, 2.0]), "v": torch.tensor([1.0, 2.0, 0.0])}
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, float("nan")]])
    scen = torch.tensor([0, 1, 0])
    total, per_task = loss(out, labels, scen)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out["c"], labels[:, 0], reduction="none")
    w = sw[scen]
    exp_c = (bce * w).sum() / 3
    exp_v = (1.0 * 1 + 1.0 * 3) / 2  # squared errors 1 and 1, weights 1 and 3, NaN row left out
    assert float(per_task[0]) == pytest.approx(float(exp_c)) and float(per_task[1]) == pytest.approx(exp_v)
    assert float(total) == pytest.approx(float(2.0 * exp_c + 0.5 * exp_v))


def test_uncertainty_weighting_learns_log_variances(data) -> None:  # noqa: ANN001
    _, result = _fit(data, loss_weighting="uncertainty", max_epochs=2)
    log_vars = [result.history[-1][f"log_var/{t}"] for t in ("click", "buy", "value")]
    assert all(abs(v) > 1e-3 for v in log_vars)  # moved away from the zero start
    # the noisier (higher-loss) click task gets a larger variance than the rarer, easier buy task
    assert log_vars[0] > log_vars[1]


def test_uncertainty_loss_gradient_reaches_log_var() -> None:
    schema = synthetic_schema(tasks=(Task("c", "binary"), Task("v", "regression")))
    loss = MultiTaskLoss(schema, [1.0, 1.0], "uncertainty")
    out = {"c": torch.zeros(4), "v": torch.zeros(4)}
    total, per_task = loss(out, torch.tensor([[1.0, 2.0]] * 4), torch.zeros(4, dtype=torch.long))
    expected = per_task.detach()[0] + 0.5 * per_task.detach()[1]  # s = 0 reduces to fixed weights
    assert float(total.detach()) == pytest.approx(float(expected))
    total.backward()
    assert loss.log_var.grad is not None and (loss.log_var.grad != 0).all()


def test_scenario_weighting_trains(data) -> None:  # noqa: ANN001
    _, result = _fit(data, scenario_weighting="sqrt_inverse", max_epochs=1)
    assert math.isfinite(result.history[0]["train_loss"])


# ------------------------------------------------------------------------------------------- optimiser


def test_optimizer_groups_embedding_lr_and_decay(data) -> None:  # noqa: ANN001
    model = build_model("shared_bottom", data.schema, SMALL)
    emb = embedding_parameters(model)
    assert emb and model.embedding.sparse_table.weight in emb
    cfg = TrainConfig(optimizer="adamw", lr=1e-3, embedding_lr=5e-2, weight_decay=1e-4, embedding_weight_decay=0.0)
    schema = data.schema
    module = TrainingModule(model, MultiTaskLoss(schema, [1.0] * 3, "uncertainty"))
    opt = build_optimizer(module, cfg)
    assert isinstance(opt, FusedAdam) and opt.decoupled  # torch's fused AdamW kernel (tests/test_adam.py)
    lrs = sorted((g["lr"], g["weight_decay"], len(g["params"])) for g in opt.param_groups)
    assert (5e-2, 0.0, len(emb)) in lrs and any(wd == 1e-4 for _, wd, _ in lrs)
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(module.parameters()))


def test_train_config_validation() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        build_config(TrainConfig, {"learning_rate": "1"}, where="train")
    with pytest.raises(ConfigError, match="scenario_weighting"):
        TrainConfig(scenario_weighting="balanced")
    cfg = build_config(TrainConfig, {"task_weights": "click:2,buy:0.5", "embedding_lr": "none"})
    assert cfg.task_weights == {"click": 2.0, "buy": 0.5} and cfg.embedding_lr is None
    assert cfg.task_weight_vector(["click", "buy", "v"], [1.0, 1.0, 0.5]) == [2.0, 0.5, 0.5]
    with pytest.raises(ConfigError, match="unknown task"):
        cfg.task_weight_vector(["click"], [1.0])


# ------------------------------------------------------------------------------ early stopping, determinism


def test_early_stopping_restores_best_and_never_reads_test(data) -> None:  # noqa: ANN001
    seed_everything(0)
    model = build_model("shared_bottom", data.schema, SMALL)
    # A large learning rate overfits quickly, so validation peaks early and patience runs out.
    cfg = TrainConfig(batch_size=64, lr=5e-2, max_epochs=12, patience=1, progress=False)
    trainer = Trainer(cfg, seed=0)
    splits = {"train": data.splits["train"], "valid": data.splits["valid"], "test": ForbiddenSplit()}
    result = trainer.fit(model, splits)
    scores = [h["valid/monitor"] for h in result.history]
    assert result.epochs < 12, "expected early stopping"
    assert result.best_epoch == max(range(len(scores)), key=scores.__getitem__)
    assert result.best_epoch == len(scores) - 2  # patience 1: stop right after the first bad epoch
    # the returned model carries the best epoch's weights, not the last epoch's
    again = monitor_value(trainer.evaluate(result.model, data.splits["valid"]), "auto")
    assert again == pytest.approx(scores[result.best_epoch], abs=1e-12)


def test_same_seed_same_metrics_other_seed_differs(data) -> None:  # noqa: ANN001
    a = _fit(data, seed=5, max_epochs=2)[1]
    b = _fit(data, seed=5, max_epochs=2)[1]
    c = _fit(data, seed=6, max_epochs=2)[1]
    assert a.history == b.history
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert a.history != c.history


def test_run_dir_files_and_in_process_resume(data, tmp_path: Path) -> None:  # noqa: ANN001
    """Resume from an epoch-end last.pt reproduces the uninterrupted run exactly."""
    splits = {"train": data.splits["train"], "valid": data.splits["valid"]}

    def trainer(run_dir: Path, epochs: int) -> tuple[Trainer, torch.nn.Module]:
        seed_everything(1)
        model = build_model("shared_bottom", data.schema, SMALL)
        cfg = TrainConfig(batch_size=128, lr=1e-2, max_epochs=epochs, patience=10, progress=False,
                          checkpoint_every=4)
        return Trainer(cfg, seed=1, run_dir=run_dir), model

    t, m = trainer(tmp_path / "full", 3)
    full = t.fit(m, splits)
    assert {"model.pt", "last.pt", "history.csv"} <= {p.name for p in (tmp_path / "full").iterdir()}
    sd = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    assert set(sd) == set(full.model.state_dict())
    state = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    assert state["state"]["finished"] and state["state"]["epoch"] == 3

    t, m = trainer(tmp_path / "part", 2)
    t.fit(m, splits)
    # pretend the 2-epoch run was a 3-epoch run interrupted at its epoch-2 checkpoint
    payload = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    payload["state"]["finished"] = False
    torch.save(payload, tmp_path / "part" / "last.pt")
    t, m = trainer(tmp_path / "part", 3)
    resumed = t.fit(m, splits, resume=True)
    assert resumed.history == full.history
    for pa, pb in zip(resumed.model.parameters(), full.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_resume_rejects_other_seed(data, tmp_path: Path) -> None:  # noqa: ANN001
    seed_everything(0)
    model = build_model("shared_bottom", data.schema, SMALL)
    cfg = TrainConfig(batch_size=256, max_epochs=1, progress=False)
    Trainer(cfg, seed=0, run_dir=tmp_path).fit(model, data.splits)
    with pytest.raises(ConfigError, match="seed"):
        Trainer(cfg, seed=1, run_dir=tmp_path).fit(model, data.splits, resume=True)


def test_regression_only_monitor_falls_back_to_rmse() -> None:
    from msmtrec.data.planted import planted_splits

    schema = synthetic_schema(tasks=(Task("v", "regression"),))
    splits = planted_splits(schema, 1000)
    seed_everything(0)
    model = build_model("shared_bottom", schema, SMALL)
    result = Trainer(TrainConfig(batch_size=128, max_epochs=2, progress=False)).fit(model, splits)
    assert result.history[0]["valid/mean_auc"] is None
    assert result.best_score == pytest.approx(-result.history[result.best_epoch]["valid/mean_rmse"])


# ------------------------------------------------------------------------------ validation inside epochs


def test_evals_per_epoch_validates_inside_each_epoch(data) -> None:  # noqa: ANN001
    _, result = _fit(data, evals_per_epoch=4, max_epochs=2, patience=100)
    seen = [row["epoch"] for row in result.history]
    assert len(seen) == 8 and seen[3] == 1 and seen[7] == 2
    assert all(a < b for a, b in zip(seen, seen[1:], strict=False))  # evenly spread passes, in order
    assert all(0 < s < 1 for s in seen[:3]) and all(1 < s < 2 for s in seen[4:7])
    assert result.kept_at == seen[result.best_epoch] and result.epochs == 2
    line = Trainer._epoch_line(result.history[0], False, 2)
    assert line.startswith(f"epoch {seen[0]:.2f}/2:") and Trainer._epoch_line(result.history[3], False, 2).startswith(
        "epoch 1/2:")


def test_patience_counts_validation_passes_so_training_can_stop_inside_an_epoch(data) -> None:  # noqa: ANN001
    # min_delta 1.0: only the first pass can improve, so patience 2 ends training at the third pass, 3/4 into
    # the first epoch, with the first pass's weights kept.
    _, result = _fit(data, evals_per_epoch=4, max_epochs=5, patience=2, min_delta=1.0)
    assert len(result.history) == 3 and result.epochs == 0
    assert result.best_epoch == 0 and 0 < result.kept_at < 1


def test_evals_per_epoch_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="evals_per_epoch"):
        build_config(TrainConfig, {"evals_per_epoch": 0})


@pytest.mark.parametrize("kill_after", [3, 5])  # right after the pass at batch 3 of 10, and two batches before 7
def test_resume_inside_an_epoch_with_several_validations_matches_the_uninterrupted_run(
    data, tmp_path: Path, kill_after: int  # noqa: ANN001
) -> None:
    splits = {"train": data.splits["train"], "valid": data.splits["valid"]}

    def fit(run_dir: Path, resume: bool = False, stop_at: int | None = None):  # noqa: ANN202
        seed_everything(2)
        model = build_model("shared_bottom", data.schema, SMALL)
        cfg = TrainConfig(batch_size=len(splits["train"]) // 10 + 1, lr=1e-2, max_epochs=2, patience=10,
                          progress=False, checkpoint_every=1, evals_per_epoch=3)
        trainer = Trainer(cfg, seed=2, run_dir=run_dir)

        def kill(state) -> None:  # noqa: ANN001
            if state.global_step == stop_at:
                raise KeyboardInterrupt

        trainer.after_step = kill if stop_at is not None else None
        return trainer.fit(model, splits, resume=resume)

    full = fit(tmp_path / "full")
    assert len(full.history) == 6
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "part", stop_at=kill_after)
    resumed = fit(tmp_path / "part", resume=True)
    assert resumed.history == full.history and resumed.best_epoch == full.best_epoch
    for pa, pb in zip(resumed.model.parameters(), full.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
