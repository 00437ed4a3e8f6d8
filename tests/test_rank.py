"""Page assembly: ordering follows the objective, and the ad rules hold on hand-built and random cases."""

from __future__ import annotations

import numpy as np
import pytest

from msmtrec.data.schema import Task, synthetic_schema
from msmtrec.serving.ranking import (
    Candidates,
    Objective,
    Slots,
    assemble_page,
    candidate_values,
    check_objective,
    default_click_task,
    default_conversion_task,
    default_weights,
    rank,
)

SCHEMA = synthetic_schema(
    tasks=(Task("click", "binary"), Task("buy", "binary", inside="click"), Task("gmv", "regression"))
)


def _preds(click: list[float], buy: list[float], gmv: list[float] | None = None) -> dict[str, np.ndarray]:
    return {"click": np.array(click), "buy": np.array(buy), "gmv": np.array(gmv or [0.0] * len(click))}


def test_order_follows_objective_weights() -> None:
    preds = _preds(click=[0.9, 0.5, 0.1], buy=[0.01, 0.10, 0.05])
    cands = Candidates.organic(3)
    by_click = rank(preds, Objective({"click": 1.0}), Slots(positions=3), cands)
    assert by_click.order == [0, 1, 2]
    by_buy = rank(preds, Objective({"buy": 1.0}), Slots(positions=3), cands)
    assert by_buy.order == [1, 2, 0]
    # a conversion worth 10 clicks: values 0.9+0.1=1.0, 0.5+1.0=1.5, 0.1+0.5=0.6
    mixed = rank(preds, Objective({"click": 1.0, "buy": 10.0}), Slots(positions=3), cands)
    assert mixed.order == [1, 0, 2]
    np.testing.assert_allclose(mixed.value, [1.0, 1.5, 0.6])


def test_price_tasks_and_regression_units() -> None:
    preds = _preds(click=[0.5, 0.5], buy=[0.1, 0.05], gmv=[3.0, 1.0])
    cands = Candidates(np.zeros(2, bool), np.zeros(2), np.zeros(2, bool), np.array([10.0, 40.0]))
    page = rank(preds, Objective({"buy": 1.0}, price_tasks=("buy",)), Slots(positions=2), cands)
    assert page.order == [1, 0]  # 0.05 * 40 = 2.0 beats 0.1 * 10 = 1.0
    page = rank(preds, Objective({"gmv": 1.0}), Slots(positions=2), cands)
    assert page.order == [0, 1]


def test_ad_revenue_cpc_and_cpa() -> None:
    preds = _preds(click=[0.2, 0.2], buy=[0.05, 0.05])
    cands = Candidates(np.array([True, True]), np.array([1.0, 2.0]), np.array([False, True]), np.ones(2))
    obj = Objective({"click": 0.0}, click_task="click", conversion_task="buy")
    value, revenue = candidate_values(preds, obj, cands)
    np.testing.assert_allclose(revenue, [0.2, 0.1])  # 1.0 x p(click), 2.0 x p(buy)


def test_ads_respect_max_ads_and_positions() -> None:
    # organic values 1.0 .. 0.1; ads worth far more than any organic item
    n_org, n_ads = 10, 5
    click = list(np.linspace(1.0, 0.1, n_org)) + [0.9] * n_ads
    preds = _preds(click=click, buy=[0.0] * (n_org + n_ads))
    is_ad = np.array([False] * n_org + [True] * n_ads)
    cands = Candidates(is_ad, np.where(is_ad, 100.0, 0.0), np.zeros(n_org + n_ads, bool), np.ones(n_org + n_ads))
    obj = Objective({"click": 1.0}, click_task="click")
    page = rank(preds, obj, Slots(positions=8, max_ads=2, ad_positions=(2, 5, 7)), cands)
    ads_at = [pos for pos, i in zip(page.positions, page.order, strict=True) if is_ad[i]]
    assert ads_at == [2, 5]
    assert len(page.order) == 8 and page.positions == list(range(1, 9))
    organic_order = [i for i in page.order if not is_ad[i]]
    assert organic_order == sorted(organic_order)  # organic items keep their value order


def test_ad_never_displaces_a_better_organic_item() -> None:
    preds = _preds(click=[0.8, 0.6, 0.4, 0.3], buy=[0.0] * 4)
    is_ad = np.array([False, False, False, True])
    # the ad earns 0.5 x 0.3 = 0.15 revenue, worth 0.3 + 0.15 = 0.45: above item 2 (0.4), below items 0, 1
    cands = Candidates(is_ad, np.array([0, 0, 0, 0.5]), np.zeros(4, bool), np.ones(4))
    obj = Objective({"click": 1.0}, click_task="click")
    page = rank(preds, obj, Slots(positions=3, max_ads=1, ad_positions=None), cands)
    assert page.order == [0, 1, 3]
    # only position 1 allowed: the ad is worth less than item 0 there, so it is not shown
    page = rank(preds, obj, Slots(positions=3, max_ads=1, ad_positions=(1,)), cands)
    assert page.order == [0, 1, 2]


@pytest.mark.parametrize("seed", range(25))
def test_ad_rules_hold_on_random_pages(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    is_ad = rng.random(n) < 0.4
    value = rng.random(n)
    revenue = np.where(is_ad, rng.random(n) * 0.5, 0.0)
    positions = int(rng.integers(1, 15))
    ad_positions = tuple(sorted(set(rng.integers(1, positions + 1, size=3).tolist())))
    slots = Slots(positions=positions, max_ads=int(rng.integers(0, 4)), ad_positions=ad_positions)
    page = assemble_page(value, revenue, is_ad, slots)
    worth = page.worth
    chosen = page.order
    assert len(set(chosen)) == len(chosen) <= positions
    assert page.positions == list(range(1, len(chosen) + 1))
    ads = [(pos, i) for pos, i in zip(page.positions, chosen, strict=True) if is_ad[i]]
    assert len(ads) <= slots.max_ads
    assert all(pos in ad_positions for pos, _ in ads)
    organic_on_page = [i for i in chosen if not is_ad[i]]
    organic_rest = [i for i in range(n) if not is_ad[i] and i not in chosen]
    assert [worth[i] for i in organic_on_page] == sorted((worth[i] for i in organic_on_page), reverse=True)
    for pos, ad in ads:
        # every organic item placed below the ad, or pushed off the page, is worth less than the ad
        below = [i for p, i in zip(page.positions, chosen, strict=True) if p > pos and not is_ad[i]]
        assert all(worth[ad] > worth[i] for i in below + organic_rest)
    # the page is only short when organic items ran out
    if len(chosen) < positions:
        assert not organic_rest


def test_defaults_from_schema_and_config() -> None:
    assert default_click_task(SCHEMA) == "click"
    assert default_conversion_task(SCHEMA) == "buy"
    assert default_weights(SCHEMA) == {"click": 1.0, "buy": 1.0}
    assert default_weights(SCHEMA, {"serving": {"objective": {"weights": {"gmv": 0.1}}}}) == {"gmv": 0.1}
    assert check_objective(Objective({"nope": 1.0}), SCHEMA)[0].startswith("objective.weights.nope")
    assert check_objective(Objective({"click": 1.0}, click_task="gmv"), SCHEMA)
