"""Scores shared by the task kinds: exact (group) AUC, expected calibration error, and the post-hoc
calibrators (Platt scaling, isotonic regression) fitted on validation outputs.

Everything is vectorised numpy in float64. AUC is exact (rank statistic with average ranks for ties).
"""

from __future__ import annotations

import numpy as np
import torch

ECE_BINS = 10
"""Equal-mass bins of the expected calibration error (equal-width bins are empty at low positive rates)."""


def _grouped_auc(
    labels: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUC of every group at once: (auc per group, rows per group, whether the group has both classes).

    Rows are sorted by (group, score); the average rank of each row inside its group comes from the
    start/end positions of its tie block, and per-group rank sums of positives are a ``bincount``. The
    Mann–Whitney identity AUC = (R⁺ − P(P+1)/2) / (P·N) then gives every group's AUC without a loop.
    """
    n = scores.shape[0]
    if n == 0:
        empty = np.zeros(0)
        return empty, empty.astype(np.int64), empty.astype(bool)
    scores = scores.astype(np.float64, copy=False)
    y = labels.astype(np.float64, copy=False)
    if groups is None:
        order = np.argsort(scores, kind="stable")
        g = np.zeros(n, dtype=np.int64)
    else:
        order = np.lexsort((scores, groups))
        g = groups[order]
    s, y = scores[order], y[order]
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    new_group[1:] = g[1:] != g[:-1]
    group_id = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)
    new_tie = new_group.copy()
    new_tie[1:] |= s[1:] != s[:-1]
    tie_id = np.cumsum(new_tie) - 1
    tie_start = np.flatnonzero(new_tie)
    tie_end = np.append(tie_start[1:], n) - 1
    rank = (tie_start + tie_end)[tie_id] / 2.0 - group_start[group_id] + 1.0
    n_groups = group_start.shape[0]
    size = np.bincount(group_id, minlength=n_groups)
    pos = np.bincount(group_id, weights=y, minlength=n_groups)
    neg = size - pos
    rank_sum = np.bincount(group_id, weights=rank * y, minlength=n_groups)
    valid = (pos > 0) & (neg > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = np.where(valid, (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg), np.nan)
    return auc, size, valid


def auc(labels: np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor) -> float | None:
    """Exact ROC AUC with ties counted as half (average ranks); ``None`` when only one class is present."""
    a, _, valid = _grouped_auc(_np(labels), _np(scores))
    return float(a[0]) if valid.size and valid[0] else None


def gauc(
    labels: np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor, users: np.ndarray | torch.Tensor
) -> float | None:
    """Group AUC: per-user AUC averaged with weights = the user's rows, over users having both classes."""
    a, size, valid = _grouped_auc(_np(labels), _np(scores), _np(users).astype(np.int64))
    if not valid.any():
        return None
    w = size[valid].astype(np.float64)
    return float((a[valid] * w).sum() / w.sum())


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float | None:
    """Σ_b (n_b / n) · |mean p_b − mean y_b| over equal-mass bins of the predicted probability."""
    n = labels.shape[0]
    if n == 0:
        return None
    order = np.argsort(probs, kind="stable")
    edges = np.linspace(0, n, min(bins, n) + 1).astype(np.int64)
    p, y = probs[order].astype(np.float64), labels[order].astype(np.float64)
    cp, cy = np.concatenate([[0.0], np.cumsum(p)]), np.concatenate([[0.0], np.cumsum(y)])
    gap = np.abs((cp[edges[1:]] - cp[edges[:-1]]) - (cy[edges[1:]] - cy[edges[:-1]]))
    return float(gap.sum() / n)


def fit_platt(logits: np.ndarray, labels: np.ndarray, steps: int = 100) -> tuple[float, float]:
    """``(a, b)`` minimising the log loss of ``sigmoid(a · logit + b)`` (Platt, 1999).

    Damped Newton steps (the problem is convex in two unknowns; step halving keeps the loss decreasing).
    """
    x, y = logits.astype(np.float64), labels.astype(np.float64)
    if x.size == 0 or y.min() == y.max():
        return 1.0, 0.0

    def loss(a: float, b: float) -> float:
        z = a * x + b
        return float(np.mean(np.logaddexp(0.0, z) - y * z))

    a, b, current = 1.0, 0.0, loss(1.0, 0.0)
    for _ in range(steps):
        p = 0.5 * (1.0 + np.tanh(0.5 * (a * x + b)))  # a sigmoid that cannot overflow
        g = np.array([np.mean((p - y) * x), np.mean(p - y)])
        w = p * (1 - p) + 1e-12
        h = np.array([[np.mean(w * x * x), np.mean(w * x)], [np.mean(w * x), np.mean(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        t = 1.0
        while t > 1e-6 and loss(a - t * step[0], b - t * step[1]) > current:
            t *= 0.5
        a, b = a - t * step[0], b - t * step[1]
        new = loss(a, b)
        if current - new < 1e-12:
            break
        current = new
    return float(a), float(b)


def fit_isotonic(scores: np.ndarray, labels: np.ndarray, max_knots: int = 200) -> tuple[list[float], list[float]]:
    """Pool-adjacent-violators fit of a non-decreasing map score → rate; returns interpolation knots.

    The knots are the block means (x, y), thinned to at most ``max_knots`` so the run file stays small;
    between knots the map is linear, outside it is flat.
    """
    if scores.size == 0:
        return [0.0], [0.0]
    order = np.argsort(scores, kind="stable")
    x, y = scores[order].astype(np.float64), labels[order].astype(np.float64)
    sums, counts, xs = [], [], []
    for xi, yi in zip(x, y, strict=True):
        sums.append(yi)
        counts.append(1.0)
        xs.append(xi)
        while len(sums) > 1 and sums[-2] / counts[-2] >= sums[-1] / counts[-1]:
            s, c, xv = sums.pop(), counts.pop(), xs.pop()
            sums[-1] += s
            xs[-1] = (xs[-1] * counts[-1] + xv * c) / (counts[-1] + c)
            counts[-1] += c
    kx = np.array(xs)
    ky = np.array(sums) / np.array(counts)
    if kx.size > max_knots:
        keep = np.unique(np.linspace(0, kx.size - 1, max_knots).round().astype(np.int64))
        kx, ky = kx[keep], ky[keep]
    return kx.tolist(), ky.tolist()


def interp(x: torch.Tensor, knots_x: list[float], knots_y: list[float]) -> torch.Tensor:
    """Piecewise-linear interpolation through the knots (flat outside), in torch (like ``np.interp``)."""
    kx = torch.as_tensor(knots_x, dtype=x.dtype, device=x.device)
    ky = torch.as_tensor(knots_y, dtype=x.dtype, device=x.device)
    if kx.numel() == 1:
        return ky.expand_as(x).clone()
    i = torch.searchsorted(kx, x.contiguous()).clamp(1, kx.numel() - 1)
    x0, x1, y0, y1 = kx[i - 1], kx[i], ky[i - 1], ky[i]
    t = ((x - x0) / (x1 - x0).clamp(min=1e-12)).clamp(0.0, 1.0)
    return y0 + t * (y1 - y0)


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
