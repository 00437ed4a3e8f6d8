"""Loss balancing (training/balancing.py): PCGrad's projection, GradNorm's and DWA's weight rules, and that
each method trains through the trainer."""

from __future__ import annotations

import math

import pytest
import torch

from msmtrec.data.planted import planted_splits
from msmtrec.data.schema import Task, synthetic_schema
from msmtrec.data.sources import load_planted
from msmtrec.errors import ConfigError
from msmtrec.models import build_model
from msmtrec.training import TrainConfig, Trainer
from msmtrec.training.balancing import dwa_weights, gradnorm_weights, make_balancer, project_conflicting
from msmtrec.training.loss import MultiTaskLoss
from msmtrec.training.trainer import seed_everything

SMALL = {"embed_dim": 8, "bottom_dims": (32,), "tower_dims": (16,)}


def test_pcgrad_removes_the_conflicting_component() -> None:
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, 2.0]])  # g0·g1 < 0; g2 conflicts with neither
    out = project_conflicting(g)
    assert torch.allclose(out[0], torch.tensor([0.5, 0.5]))  # g0 − (g0·g1/‖g1‖²) g1
    assert torch.allclose(out[1], torch.tensor([0.0, 1.0]))  # g1 − (g1·g0/‖g0‖²) g0
    assert float(out[0] @ g[1]) == pytest.approx(0.0) and float(out[1] @ g[0]) == pytest.approx(0.0)
    assert torch.equal(out[2], g[2])
    agree = torch.tensor([[1.0, 1.0], [2.0, 0.5]])
    assert torch.equal(project_conflicting(agree), agree)  # no conflict: nothing changes


def test_gradnorm_gives_weight_to_the_task_that_trains_slower() -> None:
    w = torch.ones(3)
    norms = torch.tensor([1.0, 1.0, 1.0])
    ratios = torch.tensor([0.5, 0.9, 0.7])  # task 1's loss fell least, task 0's most
    for _ in range(20):
        w = gradnorm_weights(w, norms, ratios, alpha=1.5, lr=0.025)
    assert w.sum().item() == pytest.approx(3.0)
    assert w[1] > w[2] > w[0]
    # equal training rates but a task with a larger gradient: its weight shrinks to equalise G_i
    w2 = gradnorm_weights(torch.ones(2), torch.tensor([4.0, 1.0]), torch.ones(2), alpha=1.5, lr=0.025)
    assert w2[0] < 1 < w2[1] and w2.sum().item() == pytest.approx(2.0)


def test_dwa_weights_favour_the_task_whose_loss_fell_least() -> None:
    w = dwa_weights(torch.tensor([0.5, 0.9]), torch.tensor([1.0, 1.0]), temperature=2.0)
    assert w.sum().item() == pytest.approx(2.0) and w[1] > w[0]
    expected = 2 * torch.softmax(torch.tensor([0.5, 0.9]) / 2.0, dim=0)
    assert torch.allclose(w, expected)


def test_gradnorm_in_training_moves_weight_to_the_task_that_cannot_learn() -> None:
    """A learnable task and a pure-noise task: the noise task's loss does not fall, so it gains weight."""
    schema = synthetic_schema(tasks=(Task("signal", "binary"), Task("noise", "binary")))
    train = planted_splits(schema, rows=3000, seed=1)["train"]
    labels = train.tensors["labels"]
    labels[:, 1] = (torch.rand(len(labels), generator=torch.Generator().manual_seed(3)) < 0.5).float()
    torch.manual_seed(0)
    model = build_model("shared_bottom", schema, SMALL)
    loss = MultiTaskLoss(schema, [1.0, 1.0], "gradnorm")
    balancer = make_balancer("gradnorm", loss, model, distributed=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(3):
        for batch in train.batches(256, shuffle=True, seed=0, epoch=epoch):
            total, _ = loss(model(batch), batch["labels"], batch["scenario"])
            opt.zero_grad()
            balancer.backward(total)
            opt.step()
    assert loss.balance.sum().item() == pytest.approx(2.0, abs=1e-5)
    assert loss.balance[1] > 1.0 > loss.balance[0], loss.balance
    assert balancer.shared and all(p.grad is not None for p in balancer.shared)


@pytest.mark.parametrize("method", ["gradnorm", "pcgrad", "dwa"])
def test_each_balancer_trains(method: str) -> None:
    data = load_planted(2000)
    seed_everything(0)
    model = build_model("shared_bottom", data.schema, SMALL)
    cfg = TrainConfig(batch_size=128, lr=1e-2, max_epochs=2, progress=False, loss_weighting=method)
    result = Trainer(cfg, seed=0).fit(model, {"train": data.splits["train"], "valid": data.splits["valid"]})
    last = result.history[-1]
    assert math.isfinite(last["train_loss"]) and last["valid/mean_auc"] > 0.7
    assert result.history[0]["train_loss"] > last["train_loss"]
    if method in ("gradnorm", "dwa"):  # DWA's weights are set after the second epoch
        weights = [last[f"balance/{t}"] for t in data.schema.task_names]
        assert sum(weights) == pytest.approx(len(weights), rel=1e-5)
        assert max(abs(w - 1.0) for w in weights) > 1e-3


def test_per_task_gradient_methods_refuse_torchrun() -> None:
    schema = synthetic_schema()
    model = build_model("shared_bottom", schema, SMALL)
    loss = MultiTaskLoss(schema, [1.0, 1.0], "pcgrad")
    with pytest.raises(ConfigError, match="one process"):
        make_balancer("pcgrad", loss, model, distributed=True)
    assert make_balancer("dwa", loss, model, distributed=True) is not None
    assert make_balancer("fixed", loss, model, distributed=False) is None
    with pytest.raises(ConfigError):
        TrainConfig(loss_weighting="gradnorm", dwa_temperature=0)
