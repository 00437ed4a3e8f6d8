"""Statistics the benchmark reports: DeLong confidence intervals on AUCs and a paired test over seeds.

Kept apart from :mod:`msmtrec.training.metrics` (which the trainer uses every epoch) because these are
only needed once per finished run and per report.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from msmtrec.tasks import kind_of

Z95 = 1.959963984540054


def midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (what the Mann-Whitney statistic needs)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = len(x)
    ranks = np.empty(n, dtype=np.float64)
    # tie blocks: positions where the sorted value changes
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], n]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks start+1 .. end
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def delong_ci(labels: np.ndarray, scores: np.ndarray, z: float = Z95) -> tuple[float, float, float] | None:
    """(AUC, low, high): DeLong et al. (1988) variance of one AUC, normal interval clipped to [0, 1].

    None when a class has fewer than two rows (the variance is undefined). O(n log n) via midranks
    (Sun & Xu, 2014).
    """
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    keep = ~np.isnan(y)
    y, s = y[keep], s[keep]
    pos, neg = s[y == 1], s[y == 0]
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        return None
    r_all = midranks(np.concatenate([pos, neg]))
    r_pos, r_neg = midranks(pos), midranks(neg)
    auc = (r_all[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    v10 = (r_all[:m] - r_pos) / n  # per positive: share of negatives ranked below it
    v01 = 1.0 - (r_all[m:] - r_neg) / m  # per negative: share of positives ranked above it
    se = math.sqrt(max(v10.var(ddof=1) / m + v01.var(ddof=1) / n, 0.0))
    return float(auc), max(0.0, auc - z * se), min(1.0, auc + z * se)


def cell_auc_cis(schema: Any, preds: Any, all_label: str = "all") -> dict[tuple[str, str], tuple[float, float]]:
    """95 % DeLong interval of every binary (scenario, task) cell and of each task pooled (``all``)."""
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for j, task in enumerate(schema.tasks):
        if not kind_of(task).probability:  # AUC intervals are for probability outputs
            continue
        y, x = preds.labels[:, j], preds.outputs[task.name]
        sections = [(s, preds.scenario == i) for i, s in enumerate(schema.scenarios)]
        for name, mask in [*sections, (all_label, np.ones(len(y), dtype=bool))]:
            ci = delong_ci(y[mask], x[mask])
            if ci is not None:
                out[(name, task.name)] = (ci[1], ci[2])
    return out


def paired_test(a: np.ndarray, b: np.ndarray) -> dict[str, float | int]:
    """Paired comparison of two models over the same seeds: mean difference, t-test p and sign-flip p.

    The sign-flip (permutation) p-value is exact over all 2^n sign assignments, so it needs no normality;
    with 5 seeds its smallest possible value is 2/32 = 0.0625 — five seeds cannot show p < 0.05 by it,
    which the report says rather than hides.
    """
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    out: dict[str, float | int] = {"n": n, "mean_diff": float(d.mean()) if n else math.nan}
    if n < 2:
        out.update(t_p=math.nan, sign_flip_p=math.nan)
        return out
    out["t_p"] = float(stats.ttest_rel(a, b).pvalue) if np.any(d != d[0]) else (0.0 if d[0] != 0 else 1.0)
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * n)).reshape(n, -1).T
    flipped = np.abs((signs * d).mean(axis=1))
    out["sign_flip_p"] = float((flipped >= abs(d.mean()) - 1e-12).mean())
    return out
