"""DeLong intervals and the paired test over seeds, against independent computations."""

from __future__ import annotations

import numpy as np
import pytest

from msmtrec.evaluation.stats import delong_ci, midranks, paired_test

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_midranks_average_ties() -> None:
    assert midranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


@pytest.mark.parametrize("seed", range(2))
def test_delong_matches_sklearn_auc_and_a_bootstrap_width(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 600).astype(float)
    s = np.round(y * 0.7 + rng.normal(size=600), 1)  # rounded: ties on purpose
    auc, lo, hi = delong_ci(y, s)
    assert auc == pytest.approx(sklearn_metrics.roc_auc_score(y, s))
    boot = []
    for _ in range(250):
        i = rng.integers(0, 600, 600)
        if 0 < y[i].sum() < 600:
            boot.append(sklearn_metrics.roc_auc_score(y[i], s[i]))
    # the DeLong standard error agrees with the bootstrap's within 20 %
    assert (hi - lo) / (2 * 1.96) == pytest.approx(np.std(boot), rel=0.2)
    assert lo < auc < hi


def test_delong_needs_two_of_each_class() -> None:
    assert delong_ci(np.array([1, 0, 0, 0.0]), np.array([0.9, 0.1, 0.2, 0.3])) is None


def test_paired_test() -> None:
    a = np.array([0.71, 0.72, 0.73, 0.72, 0.74])
    b = a - np.array([0.01, 0.012, 0.009, 0.011, 0.010])
    r = paired_test(a, b)
    assert r["n"] == 5 and r["mean_diff"] == pytest.approx(0.0104)
    assert r["t_p"] < 0.001
    assert r["sign_flip_p"] == pytest.approx(2 / 32)  # every seed favours a: the smallest possible p
    same = paired_test(a, a)
    assert same["sign_flip_p"] == 1.0 and same["t_p"] == 1.0
