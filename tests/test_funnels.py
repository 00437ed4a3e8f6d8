"""Funnels of any depth: p(child) = p(parent chain) · p(child | parent), for every registered model.

Issue 15: ``compose_outputs`` multiplied a grandchild by its parent's *raw* tower output, so with
click → cart → buy the buy probability ignored p(click) (0.25 instead of 0.0045).
"""

from __future__ import annotations

import pytest
import torch

from msmtrec.data.schema import Task, random_batch, synthetic_schema
from msmtrec.data.spec import spec_from_dict
from msmtrec.errors import SpecError
from msmtrec.layers.outputs import compose_outputs
from msmtrec.models import build_model, registered_models
from msmtrec.serving.ranking import default_conversion_task

THREE = (Task("click", "binary"), Task("cart", "binary", inside="click"), Task("buy", "binary", inside="cart"))
FOUR = (*THREE, Task("repeat", "binary", inside="buy"))


def _logit(p: float) -> torch.Tensor:
    return torch.logit(torch.tensor([p], dtype=torch.float64))


def test_three_stage_funnel_multiplies_the_whole_chain() -> None:
    schema = synthetic_schema(tasks=THREE)
    out = compose_outputs(schema, [_logit(0.018), _logit(0.5), _logit(0.5)])
    probs = {k: float(torch.sigmoid(v)) for k, v in out.items()}
    assert probs["click"] == pytest.approx(0.018, rel=1e-6)
    assert probs["cart"] == pytest.approx(0.009, rel=1e-6)
    assert probs["buy"] == pytest.approx(0.0045, rel=1e-6)


def test_four_stage_funnel_in_any_declaration_order() -> None:
    shuffled = (FOUR[3], FOUR[1], FOUR[0], FOUR[2])  # children declared before their parents
    schema = synthetic_schema(tasks=shuffled)
    conditional = {"click": 0.1, "cart": 0.4, "buy": 0.5, "repeat": 0.2}
    out = compose_outputs(schema, [_logit(conditional[t.name]) for t in shuffled])
    assert list(out) == [t.name for t in shuffled]
    probs = {k: float(torch.sigmoid(v)) for k, v in out.items()}
    assert probs["repeat"] == pytest.approx(0.1 * 0.4 * 0.5 * 0.2, rel=1e-6)
    assert probs["buy"] == pytest.approx(0.1 * 0.4 * 0.5, rel=1e-6)


@pytest.mark.parametrize("name", registered_models())
def test_every_model_keeps_deep_funnels_monotone(name: str) -> None:
    """Whatever the weights, p(click) ≥ p(cart) ≥ p(buy) ≥ p(repeat) for every row of every model."""
    torch.manual_seed(0)
    schema = synthetic_schema(tasks=FOUR)
    model = build_model(name, schema).eval()
    with torch.no_grad():
        for p in model.parameters():  # large random weights make raw tower outputs disagree strongly
            p.add_(torch.randn_like(p))
        probs = model.predict(random_batch(schema, 64, torch.Generator().manual_seed(1)))
    if not getattr(model.config, "funnel", True):  # a model configured without funnels has nothing to check
        pytest.skip(f"{name} predicts every task directly by default")
    for parent, child in (("click", "cart"), ("cart", "buy"), ("buy", "repeat")):
        assert (probs[child] <= probs[parent] + 1e-6).all(), f"{name}: p({child}) > p({parent})"


def test_cpa_defaults_to_the_deepest_funnel_stage() -> None:
    assert default_conversion_task(synthetic_schema(tasks=THREE)) == "buy"
    assert default_conversion_task(synthetic_schema(tasks=FOUR)) == "repeat"
    two_ends = (Task("click", "binary"), Task("cart", "binary", inside="click"), Task("fav", "binary", inside="click"))
    assert default_conversion_task(synthetic_schema(tasks=two_ends)) is None  # ambiguous: the request must say


def test_spec_refuses_a_funnel_loop() -> None:
    spec = {
        "name": "loop",
        "files": {"path": "x.csv"},
        "scenario": {"column": "s"},
        "tasks": [
            {"name": "a", "label": "a", "type": "binary", "inside": "b"},
            {"name": "b", "label": "b", "type": "binary", "inside": "a"},
        ],
        "features": {"sparse": [{"name": "f"}]},
    }
    with pytest.raises(SpecError, match="loops"):
        spec_from_dict(spec)
