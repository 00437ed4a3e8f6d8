"""Turning per-task predictions into a page: objective values, ad revenue, and slot assignment.

Everything here is plain NumPy over arrays of candidates, so it is testable with hand-made predictions
and independent of any model. The last section turns a request's values (objective, slots, candidate
objects or columns) into these inputs, raising a :class:`~msmtrec.serving.errors.ServiceError` that names
the field for a bad one.

Value of a candidate under an objective with task weights ``w``::

    value_i = sum_t w_t * pred_t(i) * (price_i if t in objective.price_tasks else 1)

where binary predictions are probabilities and regression predictions are in original units, so a
weight is "the value of one click", "the value of one conversion" or "the value of one unit of spend".

An ad additionally earns its expected revenue: ``bid * p(click)`` for ``cpc`` bids or
``bid * p(conversion)`` for ``cpa`` bids, scaled by ``objective.ad_weight``. An ad's worth on the page is
``ad_weight * revenue + value`` (a promoted item can still be clicked and bought). The page is filled
greedily slot by slot: at each position the best remaining organic item is placed unless the best
remaining ad may take that position (allowed position, ad budget left) and is worth strictly more than
every organic item still waiting, so an ad never displaces an organic item worth more than itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from msmtrec.data.schema import Schema
from msmtrec.serving.errors import ServiceError
from msmtrec.tasks import kind_of


@dataclass
class Objective:
    """What a page is optimised for (see module docstring)."""

    weights: dict[str, float]
    price_tasks: tuple[str, ...] = ()
    ad_weight: float = 1.0
    click_task: str | None = None
    conversion_task: str | None = None


@dataclass
class Slots:
    """The page: ``positions`` slots (1-based), at most ``max_ads`` ads, only in ``ad_positions`` (None: any)."""

    positions: int = 10
    max_ads: int = 0
    ad_positions: tuple[int, ...] | None = None


@dataclass
class Candidates:
    """Per-candidate arrays beside the predictions (length n each)."""

    is_ad: np.ndarray
    bid: np.ndarray
    cpa: np.ndarray
    price: np.ndarray

    @classmethod
    def organic(cls, n: int) -> Candidates:
        return cls(np.zeros(n, bool), np.zeros(n), np.zeros(n, bool), np.ones(n))


@dataclass
class Page:
    """Chosen candidate indices in page order, with the figures they were ranked by."""

    order: list[int]
    value: np.ndarray
    revenue: np.ndarray
    worth: np.ndarray
    positions: list[int] = field(default_factory=list)


def default_click_task(schema: Schema) -> str | None:
    """The first binary task that another task sits inside (the funnel top), else the first binary task."""
    parents = [t.inside for t in schema.tasks if t.inside]
    binary = [t.name for t in schema.tasks if kind_of(t).probability]
    for p in parents:
        if p in binary:
            return p
    return binary[0] if binary else None


def default_conversion_task(schema: Schema) -> str | None:
    """The deepest stage of the funnel (the purchase in click → cart → purchase), else the second binary task.

    CPA ads are paid per conversion, so they must be priced by the last stage of the funnel, not by the first
    task declared inside another. When several funnels end at the same greatest depth the choice is ambiguous:
    ``None`` is returned and a request with CPA ads must name ``objective.conversion_task`` (a 422 says so).
    """
    binary = [t.name for t in schema.tasks if kind_of(t).probability]
    depth = {name: funnel_depth(schema, name) for name in binary}
    deepest = max(depth.values(), default=0)
    if deepest == 0:
        return binary[1] if len(binary) > 1 else None
    ends = [name for name in binary if depth[name] == deepest]
    return ends[0] if len(ends) == 1 else None


def funnel_depth(schema: Schema, task: str) -> int:
    """How many ``inside`` links lead from ``task`` up to its funnel's top (0 for a task outside any funnel)."""
    depth, node = 0, schema.task(task).inside
    while node:
        depth, node = depth + 1, schema.task(node).inside
    return depth


def default_weights(schema: Schema, config: Mapping | None = None) -> dict[str, float]:
    """Objective weights from the run config (``serving.objective`` or ``objective``), else 1 per binary task."""
    config = config or {}
    serving = config.get("serving") if isinstance(config.get("serving"), Mapping) else {}
    for source in (serving.get("objective") if serving else None, config.get("objective")):
        if isinstance(source, Mapping):
            w = source.get("weights", source)
            if isinstance(w, Mapping) and w:
                return {str(k): float(v) for k, v in w.items() if k in schema.task_names}
    return {t.name: 1.0 for t in schema.tasks if kind_of(t).probability}


def candidate_values(
    predictions: Mapping[str, np.ndarray], objective: Objective, cands: Candidates
) -> tuple[np.ndarray, np.ndarray]:
    """Objective value and ad revenue per candidate (revenue is 0 for organic candidates), vectorised."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported by check_finite, by candidate
        return _values(predictions, objective, cands)


def _values(
    predictions: Mapping[str, np.ndarray], objective: Objective, cands: Candidates
) -> tuple[np.ndarray, np.ndarray]:
    n = len(cands.is_ad)
    value = np.zeros(n)
    for task, w in objective.weights.items():
        if w == 0.0:
            continue
        term = w * np.asarray(predictions[task], dtype=np.float64)
        if task in objective.price_tasks:
            term = term * cands.price
        value += term
    revenue = np.zeros(n)
    if cands.is_ad.any():
        p_click = predictions[objective.click_task] if objective.click_task else np.zeros(n)
        p_conv = predictions[objective.conversion_task] if objective.conversion_task else np.zeros(n)
        per_action = np.where(cands.cpa, np.asarray(p_conv, np.float64), np.asarray(p_click, np.float64))
        revenue = np.where(cands.is_ad, cands.bid * per_action, 0.0)
    return value, revenue


def assemble_page(
    value: np.ndarray, revenue: np.ndarray, is_ad: np.ndarray, slots: Slots, ad_weight: float = 1.0
) -> Page:
    """Fill ``slots`` greedily: organic by value, ads by worth, ads only where allowed and worth more."""
    with np.errstate(over="ignore", invalid="ignore"):
        worth = np.where(is_ad, ad_weight * revenue + value, value)
    idx = np.arange(len(value))
    # stable sort on -worth keeps request order among ties, so results are deterministic
    organic = idx[~is_ad][np.argsort(-worth[~is_ad], kind="stable")].tolist()
    ads = idx[is_ad][np.argsort(-worth[is_ad], kind="stable")].tolist()
    allowed = None if slots.ad_positions is None else set(slots.ad_positions)
    order: list[int] = []
    positions: list[int] = []
    oi = ai = 0
    for pos in range(1, slots.positions + 1):
        ad_ok = ai < len(ads) and ai < slots.max_ads and (allowed is None or pos in allowed)
        if ad_ok and (oi >= len(organic) or worth[ads[ai]] > worth[organic[oi]]):
            order.append(ads[ai])
            ai += 1
        elif oi < len(organic):
            order.append(organic[oi])
            oi += 1
        else:
            break  # nothing may fill this position; a page has no gaps
        positions.append(pos)
    return Page(order, value, revenue, worth, positions)


def rank(
    predictions: Mapping[str, np.ndarray], objective: Objective, slots: Slots, cands: Candidates
) -> Page:
    """Values, revenue and the page in one call."""
    value, revenue = candidate_values(predictions, objective, cands)
    return assemble_page(value, revenue, cands.is_ad, slots, objective.ad_weight)


def check_objective(objective: Objective, schema: Schema) -> list[str]:
    """Problems with an objective, each naming the field (empty when fine)."""
    names = set(schema.task_names)
    binary = {t.name for t in schema.tasks if kind_of(t).probability}
    errors = [f"objective.weights.{k}: unknown task; tasks are {schema.task_names}" for k in objective.weights
              if k not in names]
    errors += [f"objective.price_tasks: unknown task {k!r}" for k in objective.price_tasks if k not in names]
    for fname in ("click_task", "conversion_task"):
        v = getattr(objective, fname)
        if v is not None and v not in binary:
            errors.append(f"objective.{fname}: {v!r} is not a binary task; binary tasks are {sorted(binary)}")
    return errors


def ordered_positions(values: Sequence[int] | None) -> tuple[int, ...] | None:
    """Deduplicated, sorted ad positions (or None for 'any position')."""
    return None if values is None else tuple(sorted(set(int(v) for v in values)))


# ------------------------------------------------------------------------------- request values → inputs


def objective_from(
    schema: Schema,
    base_weights: Mapping[str, float],
    weights: Mapping[str, float] | None = None,
    price_tasks: Sequence[str] = (),
    ad_weight: float = 1.0,
    click_task: str | None = None,
    conversion_task: str | None = None,
) -> Objective:
    """A request's objective, with the run's defaults filled in; a 422 naming the first bad field."""
    objective = Objective(
        weights=dict(weights) if weights is not None else dict(base_weights),
        price_tasks=tuple(price_tasks),
        ad_weight=ad_weight,
        click_task=click_task or default_click_task(schema),
        conversion_task=conversion_task or default_conversion_task(schema),
    )
    problems = check_objective(objective, schema)
    if problems:
        field = problems[0].split(":", 1)[0].split(".")
        raise ServiceError(422, ["body", *field], "; ".join(problems[:5]))
    return objective


def slots_from(positions: int, max_ads: int | None, ad_positions: Sequence[int] | None, candidates: int) -> Slots:
    """A request's page slots (no ``max_ads``: as many ads as there are candidates)."""
    return Slots(positions=positions, max_ads=candidates if max_ads is None else max_ads,
                 ad_positions=ordered_positions(ad_positions))


def candidates_from_rows(cands: Sequence[Mapping[str, Any]]) -> tuple[list[Any], Candidates]:
    """Ids and ad arrays from candidate objects (a missing bid is NaN until :func:`check_ads`)."""
    n = len(cands)
    arrays = Candidates(
        is_ad=np.fromiter((c.get("is_ad", False) for c in cands), bool, n),
        bid=np.fromiter((_or(c.get("bid"), np.nan) for c in cands), np.float64, n),
        cpa=np.fromiter((c.get("bid_type") == "cpa" for c in cands), bool, n),
        price=np.fromiter((_or(c.get("price"), 1.0) for c in cands), np.float64, n),
    )
    return [c.get("id") for c in cands], arrays


def candidates_from_columns(
    n: int,
    ids: Sequence[Any] | None = None,
    is_ad: Sequence[bool] | None = None,
    bid: Sequence[float | None] | None = None,
    bid_type: Sequence[str] | None = None,
    price: Sequence[float | None] | None = None,
) -> tuple[list[Any], Candidates]:
    """Ids and ad arrays from candidate columns; absent columns take the per-candidate defaults."""
    def numbers(values: Sequence[float | None] | None, default: float) -> np.ndarray:
        if values is None:
            return np.full(n, default)
        return np.array([default if v is None else v for v in values], dtype=np.float64)

    arrays = Candidates(
        is_ad=np.zeros(n, bool) if is_ad is None else np.array(is_ad, dtype=bool),
        bid=numbers(bid, np.nan),
        cpa=np.zeros(n, bool) if bid_type is None else np.array(bid_type, dtype=object) == "cpa",
        price=numbers(price, 1.0),
    )
    return list(ids) if ids is not None else [None] * n, arrays


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def check_ads(cands: Candidates, objective: Objective, form: str, tasks: Sequence[str]) -> None:
    """Every ad has a bid and the task its bid type pays for; then missing bids of organic items become 0."""
    missing = cands.is_ad & np.isnan(cands.bid)
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        loc: list[str | int] = ["body", form, i, "bid"] if form == "candidates" else ["body", form, "bid", i]
        raise ServiceError(422, loc, "an ad (is_ad: true) needs a bid", "missing")
    needs = (("cpc", objective.click_task, ~cands.cpa), ("cpa", objective.conversion_task, cands.cpa))
    for kind, task, pays in needs:
        if task is None and (cands.is_ad & pays).any():
            name = "click" if kind == "cpc" else "conversion"
            raise ServiceError(422, ["body", "objective", f"{name}_task"],
                               f"{kind} ads need a {name} task (name it as objective.{name}_task); "
                               f"this model's tasks are {list(tasks)}")
    cands.bid = np.nan_to_num(cands.bid, nan=0.0)


def check_finite(page: Page, form: str) -> None:
    """A page whose figures overflowed (huge weights, prices or bids) is refused, never sent with nulls."""
    for name in ("value", "revenue", "worth"):
        figures = getattr(page, name)
        bad = ~np.isfinite(figures)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ServiceError(422, ["body", "objective"],
                               f"the {name} of candidate {i} ({form}) is not a finite number: the objective's "
                               "weights, prices or bids are too large")
