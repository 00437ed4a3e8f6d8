"""A seeded simulator of multi-scenario, multi-task e-commerce logs, written as Parquet shards.

Why a simulator: the public datasets this library targets (AliExpress, Ali-CCP, KuaiRand) cannot be
shipped, and none of them tells you *why* a model wins. Here the generating process is known, so a
benchmark result can be read against the truth (``ground_truth.json``), and the row count can be pushed to
tens of millions to exercise the larger-than-memory path (:mod:`msmtrec.data.stream`).

Generating process (all draws come from ``numpy.random.default_rng`` seeded by ``seed``):

1. **World.** ``K`` latent factors. Items belong to categories (Zipf-sized); an item's factor vector is its
   category's centroid plus noise, so the category feature carries part of the affinity and the hashed
   item id the rest. A user's factor vector is an (age bucket, gender) offset plus noise, for the same
   reason. Users and items have a bias each (activity, quality); items have a log-normal price tied to
   the category. Users and items are drawn per row from power laws (a few heavy users and best-sellers,
   a long tail), through a fixed random permutation so popular ids are not the small ones.
2. **Scenarios.** ``S`` scenarios with geometric shares ``p_s ∝ r^-s``, ``r = imbalance^(1/(S-1))``, so the
   largest is ``imbalance`` (default 1000) times the smallest, like KuaiRand's tabs (216M ... < 0.5M).
   Exact per-scenario totals are fixed up front (largest remainder) and dealt to row groups with a
   multivariate hypergeometric draw, so totals are exact and every scenario is present.
3. **Scenario-specific affinity.** In scenario ``s`` the user-item affinity is
   ``a_s(u, v) = (u ⊙ w_s) · (R_s v)``: a per-factor weight ``w_s`` and a rotation ``R_s`` (angle ``θ_s`` in
   random planes; scenario 0 is the reference, θ = 0). Shared structure plus scenario shifts is what
   multi-scenario models are meant to exploit.
4. **Tasks.** ``click ~ Bernoulli(σ(b_s + a_s + user_bias + item_bias + γ_s·price + hour effect))``;
   ``purchase = click · Bernoulli(σ(c_s + a'_s + item_quality − 0.6·price))`` (only ever 1 where click is 1);
   ``dwell_time = exp(d_s + 0.4·a_s + click + 0.6·ε)`` seconds. ``a'_s`` uses the purchase weights
   ``w'_s = w_s`` except in the **conflict scenarios** (default: scenario 1), where factor 0 drives click
   strongly (weight 3) and purchase by its *negative* (the other factors at 0.3 of their click weight),
   so the two affinities are negatively correlated there (about -0.35: ``click_purchase_affinity_corr``
   in the ground truth). Sharing between the two tasks then hurts (negative transfer) and gains on one task can cost
   the other (seesaw).
   ``b_s`` and ``c_s`` are calibrated on a Monte-Carlo sample so the base click rate of each scenario hits
   a target drawn log-uniformly from ``click_rate`` (a few percent, as in AliExpress) and purchase-given-
   click hits ``purchase_rate``.

5. **Drift over time** (``drift > 0``, off by default). Rows are in time order (``ts`` grows with the row
   index over 30 days; ``day`` = whole days since the first row's day, 0–29, for specs and ``monitor --by``).
   At time ``t`` in [0, 1] the scenario shares become ``p_s(t) ∝ p_s·exp(drift·(t−½)·m_s)``
   with ``m_s`` going linearly from −1 (the largest scenario, which shrinks) to +1 (the smallest, which grows),
   and each scenario's click and purchase weights move as ``w_s(t) = w_s + drift·t·δ_s`` with a fixed
   ``δ_s ~ N(0, 0.5²)`` per factor (drawn from its own generator, so the stationary world is unchanged).
   A time split (train early, test late) then measures robustness to a changing mix and changing
   preferences; ``ground_truth.json`` records ``δ_s`` and the realised rows per scenario.
   ``drift_scenarios`` confines the drift to some scenarios (None: all): the others keep ``w_s`` and
   ``m_s = 0`` (their shares move only through the renormalisation), so a monitor can be checked against
   which scenarios really changed (``ground_truth.json``: ``drifting_scenarios`` and per scenario ``drifts``).
   Only affinities and the mix move; the feature distributions of a scenario's rows do not.

Memory is bounded by the world (``O(users + items)``) and one row group: rows are generated a row group at
a time and appended to the current shard with :class:`pyarrow.parquet.ParquetWriter`. Row group ``g`` uses
its own generator ``default_rng([seed, 1, g])``, so the output is identical for a given configuration.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from msmtrec.errors import DataError

SCENARIO_NAMES = ("home_feed", "search", "product_detail", "cart", "live", "coupon", "new_user", "mini_app")
"""Display names of the first scenarios (the shipped ``synthetic.yaml`` maps codes to these)."""

GROUND_TRUTH = "ground_truth.json"

N_AGE, N_GENDER, N_LEVEL, N_CITY, N_CATEGORY, N_BRAND = 7, 3, 5, 400, 1000, 20000


@dataclass
class SynthConfig:
    """Knobs of the simulator; the defaults give KuaiRand-like imbalance and AliExpress-like rates."""

    rows: int = 1_000_000
    scenarios: int = 8
    users: int = 1_000_000
    items: int = 200_000
    seed: int = 0
    imbalance: float = 1000.0
    """Ratio of the largest to the smallest scenario's share."""
    factors: int = 8
    """Latent dimension of the shared user-item affinity."""
    affinity_scale: float = 1.2
    """Standard deviation of the affinity term in the click logit (how learnable click is)."""
    click_rate: tuple[float, float] = (0.01, 0.08)
    """Per-scenario base click rates are drawn log-uniformly from this range."""
    purchase_rate: tuple[float, float] = (0.02, 0.10)
    """Per-scenario purchase-given-click rates are drawn log-uniformly from this range."""
    conflict_scenarios: tuple[int, ...] = (1,)
    """Scenarios where purchase depends on the negative of the factor that drives click."""
    user_zipf: float = 0.9
    item_zipf: float = 1.05
    row_group_rows: int = 131_072
    rows_per_file: int = 1_048_576
    """Rows per Parquet shard (rounded up to whole row groups)."""
    compression: str = "zstd"
    drift: float = 0.0
    """Strength of the change of scenario mix and affinities over time (0: stationary; see step 5)."""
    drift_scenarios: list[int] | None = None
    """Scenarios the drift applies to (None: every scenario); the others stay stationary."""

    def check(self) -> None:
        if self.rows < 1 or self.users < 1 or self.items < 1 or self.scenarios < 1:
            raise DataError(f"synth: rows, users, items and scenarios must be positive, got {self}")
        if self.rows < self.scenarios:
            raise DataError(f"synth: {self.rows} rows cannot cover {self.scenarios} scenarios")
        if self.imbalance < 1:
            raise DataError(f"synth: imbalance must be >= 1, got {self.imbalance}")
        if self.row_group_rows < 1 or self.rows_per_file < 1:
            raise DataError("synth: row_group_rows and rows_per_file must be positive")
        bad = [s for s in self.conflict_scenarios if not 0 <= s < self.scenarios]
        if bad:
            raise DataError(f"synth: conflict scenario(s) {bad} outside 0..{self.scenarios - 1}")
        if self.drift < 0:
            raise DataError(f"synth: drift must be >= 0, got {self.drift}")
        bad = [s for s in self.drift_scenarios or [] if not 0 <= s < self.scenarios]
        if bad:
            raise DataError(f"synth: drift scenario(s) {bad} outside 0..{self.scenarios - 1}")
        for name in ("click_rate", "purchase_rate"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi < 1:
                raise DataError(f"synth: {name} must be a range inside (0, 1), got {(lo, hi)}")


# ------------------------------------------------------------------------------------------------ world


@dataclass
class Scenario:
    """The true parameters of one scenario (written to ``ground_truth.json``)."""

    index: int
    name: str
    share: float
    rows: int
    target_click_rate: float
    target_purchase_given_click: float
    click_bias: float
    purchase_bias: float
    price_effect: float
    dwell_log_mean: float
    rotation_angle: float
    conflict: bool
    click_weights: list[float]
    purchase_weights: list[float]
    click_purchase_affinity_corr: float = 0.0
    """Correlation of the click and purchase affinity terms over the row distribution (< 0: conflict)."""
    drift_direction: list[float] = field(default_factory=list)
    """``δ_s``: how the scenario's click and purchase weights move per unit of ``drift·t`` (empty: no drift)."""
    drifts: bool = False
    """Whether this scenario's affinities (and share) move over time."""


@dataclass
class World:
    """Everything fixed before rows are drawn: users, items, scenario parameters."""

    config: SynthConfig
    user_factors: np.ndarray
    user_bias: np.ndarray
    user_age: np.ndarray
    user_gender: np.ndarray
    user_city: np.ndarray
    user_level: np.ndarray
    user_tenure: np.ndarray
    user_activity: np.ndarray
    user_cdf: np.ndarray
    user_perm: np.ndarray
    item_factors: np.ndarray
    item_bias: np.ndarray
    item_category: np.ndarray
    item_brand: np.ndarray
    item_log_price: np.ndarray
    item_age: np.ndarray
    item_cdf: np.ndarray
    item_perm: np.ndarray
    hour_effect: np.ndarray
    rotations: np.ndarray
    """``[S, K, K]``: ``R_s``."""
    click_w: np.ndarray
    purchase_w: np.ndarray
    scenarios: list[Scenario] = field(default_factory=list)
    drift_w: np.ndarray | None = None
    """``[S, K]``: ``δ_s`` (None when ``drift`` is 0)."""


def scenario_shares(n: int, imbalance: float) -> np.ndarray:
    """Geometric shares ``p_s ∝ r^-s`` with ``p_0 / p_{n-1} = imbalance``."""
    if n == 1:
        return np.ones(1)
    r = imbalance ** (1.0 / (n - 1))
    p = r ** -np.arange(n, dtype=np.float64)
    return p / p.sum()


def exact_counts(total: int, shares: np.ndarray) -> np.ndarray:
    """Largest-remainder rounding of ``total * shares`` with at least one row per share."""
    raw = total * shares
    counts = np.maximum(np.floor(raw).astype(np.int64), 1)
    diff = total - int(counts.sum())
    order = np.argsort(-(raw - np.floor(raw)), kind="stable")
    if diff > 0:
        counts[order[:diff]] += 1
    while diff < 0:  # the minimum of one row pushed us over: take from the largest
        counts[int(np.argmax(counts))] -= 1
        diff += 1
    return counts


def _power_cdf(n: int, exponent: float) -> np.ndarray:
    w = (np.arange(1, n + 1, dtype=np.float64)) ** -exponent
    c = np.cumsum(w)
    return c / c[-1]


def _rotation(rng: np.random.Generator, k: int, angle: float) -> np.ndarray:
    """A rotation by ``angle`` in ``k // 2`` random orthogonal planes."""
    q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    block = np.eye(k)
    c, s = np.cos(angle), np.sin(angle)
    for i in range(0, k - 1, 2):
        block[i : i + 2, i : i + 2] = [[c, -s], [s, c]]
    return q @ block @ q.T


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _calibrate(z: np.ndarray, target: float, weights: np.ndarray | None = None) -> float:
    """Bias ``b`` with ``weighted mean σ(b + z) = target`` (bisection; the mean is monotone in b)."""
    lo, hi = -30.0, 30.0
    w = np.ones_like(z) if weights is None else weights
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        rate = float((w * _sigmoid(mid + z)).sum() / w.sum())
        lo, hi = (mid, hi) if rate < target else (lo, mid)
    return 0.5 * (lo + hi)


def build_world(config: SynthConfig) -> World:
    """Draw users, items and per-scenario parameters; calibrate the scenario biases."""
    config.check()
    rng = np.random.default_rng([config.seed, 0])
    k, nu, ni, ns = config.factors, config.users, config.items, config.scenarios
    # factors scaled so that u·v has standard deviation about 1 before affinity_scale
    sd = k**-0.25
    age = rng.integers(0, N_AGE, nu).astype(np.int8)
    gender = rng.choice(N_GENDER, nu, p=[0.48, 0.48, 0.04]).astype(np.int8)
    offsets_age = rng.standard_normal((N_AGE, k)) * sd * 0.6
    offsets_gender = rng.standard_normal((N_GENDER, k)) * sd * 0.4
    user_factors = (offsets_age[age] + offsets_gender[gender] + rng.standard_normal((nu, k)) * sd * 0.7).astype(
        np.float32
    )
    user_cdf = _power_cdf(nu, config.user_zipf)
    user_perm = rng.permutation(nu)
    # rank → activity: heavy users click more (user bias) and have a higher 'activity' feature
    rank = np.empty(nu, np.int64)
    rank[user_perm] = np.arange(nu)
    activity = np.log1p(1e4 * np.diff(user_cdf, prepend=0.0)[rank] * nu / 10)
    user_bias = (0.3 * (activity - activity.mean()) / (activity.std() + 1e-9) + 0.3 * rng.standard_normal(nu)).astype(
        np.float32
    )
    level = np.clip(np.floor(activity / (activity.max() + 1e-9) * N_LEVEL), 0, N_LEVEL - 1).astype(np.int8)
    city = np.minimum(rng.zipf(1.3, nu) - 1, N_CITY - 1).astype(np.int16)
    tenure = rng.lognormal(5.5, 1.0, nu).astype(np.float32)

    cat_cdf = _power_cdf(N_CATEGORY, 1.0)
    category = np.searchsorted(cat_cdf, rng.random(ni)).astype(np.int32)
    centroids = rng.standard_normal((N_CATEGORY, k)) * sd * 0.75
    item_factors = (centroids[category] + rng.standard_normal((ni, k)) * sd * 0.66).astype(np.float32)
    brand = (category.astype(np.int64) * 20 + np.minimum(rng.zipf(1.5, ni) - 1, 19)) % N_BRAND
    cat_price = rng.normal(3.0, 1.0, N_CATEGORY)
    log_price = (cat_price[category] + 0.5 * rng.standard_normal(ni)).astype(np.float32)
    item_bias = (0.4 * rng.standard_normal(ni)).astype(np.float32)
    item_age = rng.exponential(90.0, ni).astype(np.float32)
    item_cdf = _power_cdf(ni, config.item_zipf)
    item_perm = rng.permutation(ni)
    hour_effect = 0.15 * np.sin(np.arange(24) / 24 * 2 * np.pi - 1.0)

    shares = scenario_shares(ns, config.imbalance)
    counts = exact_counts(config.rows, shares)
    angles = np.concatenate([[0.0], rng.uniform(0.2, 0.8, ns - 1)])
    rotations = np.stack([_rotation(rng, k, a) for a in angles]).astype(np.float32)
    click_w = (1.0 + 0.3 * rng.standard_normal((ns, k))).astype(np.float32)
    purchase_w = click_w.copy()
    for s in config.conflict_scenarios:
        click_w[s, 0] = 3.0  # factor 0 drives click here ...
        purchase_w[s] = 0.3 * click_w[s]  # ... the shared factors matter less for purchase ...
        purchase_w[s, 0] = -click_w[s, 0]  # ... and purchase follows the negative of factor 0
    click_rates = _log_uniform(rng, *config.click_rate, ns)
    buy_rates = _log_uniform(rng, *config.purchase_rate, ns)
    price_effect = rng.uniform(-0.4, 0.1, ns)
    dwell = np.log(rng.uniform(5.0, 40.0, ns))

    world = World(
        config,
        user_factors,
        user_bias,
        age,
        gender,
        city,
        level,
        tenure,
        activity.astype(np.float32),
        user_cdf,
        user_perm,
        item_factors,
        item_bias,
        category,
        brand.astype(np.int32),
        log_price,
        item_age,
        item_cdf,
        item_perm,
        hour_effect,
        rotations,
        click_w,
        purchase_w,
    )
    if config.drift > 0:
        world.drift_w = (0.5 * np.random.default_rng([config.seed, 4]).standard_normal((ns, k))).astype(np.float32)
        world.drift_w[~drift_mask(config)] = 0.0
    # calibrate the biases on a Monte-Carlo sample of the row distribution (at t = 0 when the world drifts)
    cal = np.random.default_rng([config.seed, 2])
    n_cal = 40_000
    users, items = _draw_ids(world, cal, n_cal)
    hours = cal.integers(0, 24, n_cal)
    for s in range(ns):
        a_click, a_buy = _affinities(world, s, users, items)
        z_click = a_click + world.user_bias[users] + world.item_bias[items] + hour_effect[hours]
        z_click += price_effect[s] * _price_std(world, items)
        b = _calibrate(z_click, float(click_rates[s]))
        z_buy = a_buy + world.item_bias[items] - 0.6 * _price_std(world, items)
        c = _calibrate(z_buy, float(buy_rates[s]), weights=_sigmoid(b + z_click))
        world.scenarios.append(
            Scenario(
                index=s,
                name=SCENARIO_NAMES[s] if s < len(SCENARIO_NAMES) else f"scenario_{s}",
                share=float(shares[s]),
                rows=int(counts[s]),
                target_click_rate=float(click_rates[s]),
                target_purchase_given_click=float(buy_rates[s]),
                click_bias=b,
                purchase_bias=c,
                price_effect=float(price_effect[s]),
                dwell_log_mean=float(dwell[s]),
                rotation_angle=float(angles[s]),
                conflict=s in config.conflict_scenarios,
                click_weights=[round(float(x), 4) for x in click_w[s]],
                purchase_weights=[round(float(x), 4) for x in purchase_w[s]],
                click_purchase_affinity_corr=float(np.corrcoef(a_click, a_buy)[0, 1]),
                drift_direction=[round(float(x), 4) for x in world.drift_w[s]] if world.drift_w is not None else [],
                drifts=bool(config.drift > 0 and drift_mask(config)[s]),
            )
        )
    return world


def _draw_ids(world: World, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Power-law draws of users and items (through the fixed permutations)."""
    u = world.user_perm[np.minimum(np.searchsorted(world.user_cdf, rng.random(n)), len(world.user_cdf) - 1)]
    v = world.item_perm[np.minimum(np.searchsorted(world.item_cdf, rng.random(n)), len(world.item_cdf) - 1)]
    return u, v


def _price_std(world: World, items: np.ndarray) -> np.ndarray:
    return (world.item_log_price[items] - 3.0) / 1.1


def _affinities(
    world: World, s: int, users: np.ndarray, items: np.ndarray, t: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Click and purchase affinity terms ``(u ⊙ w_s(t)) · (R_s v)`` for rows of scenario ``s`` (``t``: time of
    each row in [0, 1], used only when the world drifts)."""
    pu = world.user_factors[users]
    qv = world.item_factors[items] @ world.rotations[s].T
    scale = world.config.affinity_scale
    w_click, w_buy = world.click_w[s], world.purchase_w[s]
    if world.drift_w is not None and t is not None:
        shift = (world.config.drift * t)[:, None] * world.drift_w[s][None, :]
        w_click, w_buy = w_click + shift, w_buy + shift
    a_click = scale * ((pu * w_click) * qv).sum(1)
    a_buy = scale * ((pu * w_buy) * qv).sum(1)
    return a_click, a_buy


# ------------------------------------------------------------------------------------------------- rows


def drift_mask(config: SynthConfig) -> np.ndarray:
    """``[S]`` bool: the scenarios the drift applies to (``drift_scenarios``; None means every one)."""
    mask = np.ones(config.scenarios, bool)
    if config.drift_scenarios is not None:
        mask[:] = False
        mask[list(config.drift_scenarios)] = True
    return mask


def drifted_shares(shares: np.ndarray, drift: float, t: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Scenario shares at time ``t`` in [0, 1]: the largest shrinks and the smallest grows as ``t`` rises.

    ``mask`` (optional) limits the tilt to some scenarios; the others keep ``m_s = 0``.
    """
    m = np.linspace(-1.0, 1.0, len(shares)) if len(shares) > 1 else np.zeros(1)
    if mask is not None:
        m = np.where(mask, m, 0.0)
    p = shares * np.exp(drift * (t - 0.5) * m)
    return p / p.sum()


def plan_row_groups(config: SynthConfig, counts: np.ndarray) -> np.ndarray:
    """``[n_groups, S]`` scenario counts per row group: exact totals, dealt by hypergeometric draws.

    With ``drift`` each row group takes the shares of its time instead (so the totals follow the drifted mix).
    """
    n_groups = -(-config.rows // config.row_group_rows)
    if config.drift > 0:
        shares = scenario_shares(config.scenarios, config.imbalance)
        sizes = [min(config.row_group_rows, config.rows - g * config.row_group_rows) for g in range(n_groups)]
        return np.stack([
            exact_counts(n, drifted_shares(shares, config.drift, (g + 0.5) / n_groups, drift_mask(config)))
            if n >= config.scenarios
            else np.bincount(np.arange(n) % config.scenarios, minlength=config.scenarios)
            for g, n in enumerate(sizes)
        ]).astype(np.int64)
    rng = np.random.default_rng([config.seed, 3])
    remaining = counts.astype(np.int64).copy()
    plan = np.zeros((n_groups, len(counts)), np.int64)
    left = config.rows
    for g in range(n_groups):
        n = min(config.row_group_rows, left)
        plan[g] = rng.multivariate_hypergeometric(remaining, n) if n < left else remaining
        remaining -= plan[g]
        left -= n
    return plan


def generate_row_group(world: World, group: int, scenario_counts: np.ndarray, first_row: int) -> dict[str, np.ndarray]:
    """The columns of one row group (vectorised; a loop over scenarios only)."""
    cfg = world.config
    rng = np.random.default_rng([cfg.seed, 1, group])
    n = int(scenario_counts.sum())
    scen = rng.permutation(np.repeat(np.arange(len(scenario_counts), dtype=np.int16), scenario_counts))
    users, items = _draw_ids(world, rng, n)
    # timestamps: 30 days spread over all rows in order, like a log sorted by time
    span = 30 * 86400
    ts = 1_700_000_000 + ((first_row + np.arange(n)) * (span / max(cfg.rows, 1))).astype(np.int64)
    ts += rng.integers(0, 60, n)
    hour = ((ts // 3600) % 24).astype(np.int8)
    t_row = (first_row + np.arange(n)) / max(cfg.rows - 1, 1) if world.drift_w is not None else None
    price_std = _price_std(world, items)
    base = world.user_bias[users] + world.item_bias[items] + world.hour_effect[hour]
    z_click = np.empty(n, np.float32)
    z_buy = np.empty(n, np.float32)
    log_dwell = np.empty(n, np.float32)
    for s, p in enumerate(world.scenarios):
        idx = np.flatnonzero(scen == s)
        if idx.size == 0:
            continue
        a_click, a_buy = _affinities(world, s, users[idx], items[idx], t_row[idx] if t_row is not None else None)
        z_click[idx] = p.click_bias + a_click + base[idx] + p.price_effect * price_std[idx]
        z_buy[idx] = p.purchase_bias + a_buy + world.item_bias[items[idx]] - 0.6 * price_std[idx]
        log_dwell[idx] = p.dwell_log_mean + 0.4 * a_click
    click = rng.random(n) < _sigmoid(z_click)
    purchase = click & (rng.random(n) < _sigmoid(z_buy))
    dwell = np.exp(log_dwell + click + 0.6 * rng.standard_normal(n)).astype(np.float32)
    return {
        "impression_id": first_row + np.arange(n, dtype=np.int64),
        "ts": ts,
        "day": ((ts - 1_700_000_000) // 86400).astype(np.int16),
        "scenario": scen,
        "user_id": users.astype(np.int64),
        "item_id": items.astype(np.int64),
        "user_gender": world.user_gender[users],
        "user_age": world.user_age[users],
        "user_city": world.user_city[users],
        "user_level": world.user_level[users],
        "item_category": world.item_category[items],
        "item_brand": world.item_brand[items],
        "hour": hour,
        "user_tenure_days": world.user_tenure[users],
        "user_activity": world.user_activity[users],
        "item_price": np.exp(world.item_log_price[items]).round(2).astype(np.float32),
        "item_age_days": world.item_age[items],
        "click": click.astype(np.int8),
        "purchase": purchase.astype(np.int8),
        "dwell_time": dwell.round(3),
    }


# ------------------------------------------------------------------------------------------------ write


@dataclass
class SynthResult:
    out: Path
    files: list[str]
    rows: int
    seconds: float
    ground_truth: dict

    @property
    def rows_per_second(self) -> float:
        return self.rows / max(self.seconds, 1e-9)


def synthesize(
    config: SynthConfig,
    out: str | Path,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SynthResult:
    """Write ``out/part-00000.parquet ...`` and ``out/ground_truth.json``; memory is one row group."""
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob("part-*.parquet"))
    if existing and not overwrite:
        raise DataError(f"{out}: already holds {len(existing)} part-*.parquet file(s); pass overwrite to replace them")
    for p in existing:
        p.unlink()
    world = build_world(config)
    counts = np.array([s.rows for s in world.scenarios], np.int64)
    plan = plan_row_groups(config, counts)
    groups_per_file = max(1, -(-config.rows_per_file // config.row_group_rows))
    ns = config.scenarios
    sums = {k: np.zeros(ns) for k in ("rows", "click", "purchase", "dwell")}
    files: list[str] = []
    writer: pq.ParquetWriter | None = None
    pending: Future | None = None
    first_row = 0
    # Parquet encoding releases the GIL: one background write overlaps the next row group's generation,
    # and waiting on it before submitting the next keeps memory at two row groups.
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        for g in range(len(plan)):
            cols = generate_row_group(world, g, plan[g], first_row)
            table = pa.table(cols)
            if pending is not None:
                pending.result()
            if g % groups_per_file == 0:
                if writer is not None:
                    writer.close()
                path = out / f"part-{len(files):05d}.parquet"
                files.append(str(path))
                writer = pq.ParquetWriter(path, table.schema, compression=config.compression)
            assert writer is not None
            pending = pool.submit(writer.write_table, table, row_group_size=len(cols["click"]))
            s = cols["scenario"]
            sums["rows"] += np.bincount(s, minlength=ns)
            sums["click"] += np.bincount(s, weights=cols["click"], minlength=ns)
            sums["purchase"] += np.bincount(s, weights=cols["purchase"], minlength=ns)
            sums["dwell"] += np.bincount(s, weights=cols["dwell_time"], minlength=ns)
            first_row += len(s)
            if progress:
                progress(first_row, config.rows)
        if pending is not None:
            pending.result()
    finally:
        pool.shutdown(wait=True)
        if writer is not None:
            writer.close()
    truth = ground_truth(world, sums, files)
    (out / GROUND_TRUTH).write_text(json.dumps(truth, indent=1))
    return SynthResult(out, files, config.rows, time.perf_counter() - t0, truth)


def ground_truth(world: World, sums: dict[str, np.ndarray], files: list[str]) -> dict:
    """True parameters and realised rates per scenario, for reading benchmark results against."""
    cfg = world.config
    scen = []
    for s in world.scenarios:
        d = asdict(s)
        rows = max(sums["rows"][s.index], 1)
        clicks = sums["click"][s.index]
        d["realised"] = {
            "rows": int(sums["rows"][s.index]),
            "click_rate": float(clicks / rows),
            "purchase_rate": float(sums["purchase"][s.index] / rows),
            "purchase_given_click": float(sums["purchase"][s.index] / clicks) if clicks else None,
            "dwell_time_mean_s": float(sums["dwell"][s.index] / rows),
        }
        scen.append(d)
    rows = sums["rows"]
    return {
        "format": "msmtrec-synthetic/1",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "files": [Path(f).name for f in files],
        "rows": int(rows.sum()),
        "imbalance_realised": float(rows.max() / max(rows.min(), 1)),
        "click_rate": float(sums["click"].sum() / rows.sum()),
        "purchase_rate": float(sums["purchase"].sum() / rows.sum()),
        "conflict_scenarios": [s.name for s in world.scenarios if s.conflict],
        "drifting_scenarios": [s.name for s in world.scenarios if s.drifts],
        "scenario_column": "scenario",
        "process": (
            "click ~ Bern(sigmoid(click_bias + (u*click_weights).(R_s v) + user_bias + item_bias + price_effect*price"
            " + hour)); purchase = click * Bern(sigmoid(purchase_bias + (u*purchase_weights).(R_s v) + item_bias"
            " - 0.6*price)); dwell_time = exp(dwell_log_mean + 0.4*click_affinity + click + 0.6*eps)"
        ),
        "scenarios": scen,
    }
