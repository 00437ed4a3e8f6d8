"""``binary``: a 0/1 label; the model emits the exposure-space logit.

User units: the probability ``sigmoid(logit + offset)``, then the optional post-hoc calibrator of the
row's scenario. ``offset`` is the exact correction of training-time re-weighting: negatives kept at rate
``r`` and positives weighted by ``w`` multiply the learned odds by ``w / r``, so
``p = q / (q + (1 - q) / r)`` (with ``w = 1``) is ``logit p = logit q + log r - log w``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from msmtrec.tasks.base import Params, TaskKind, per_scenario, register_kind
from msmtrec.tasks.scores import auc, expected_calibration_error, fit_isotonic, fit_platt, gauc, interp

CALIBRATIONS = ("none", "platt", "isotonic")
MIN_CALIBRATION_ROWS = 50
"""A scenario with fewer validation rows (or a single class) keeps the pooled calibrator."""


def binary_cell(
    labels: np.ndarray, logits: np.ndarray, users: np.ndarray | None = None, probs: np.ndarray | None = None
) -> dict[str, float | int | None]:
    """Metrics of one binary cell.

    ``auc``/``gauc``/``logloss`` score the model's own exposure-space logits (ranking on logits avoids
    sigmoid ties); ``pred_mean``, ``calibration`` (mean predicted / observed rate) and ``ece`` describe the
    probabilities a user receives (``probs``: after any offset and calibrator; default ``sigmoid(logits)``).
    """
    n = int(labels.shape[0])
    if n == 0:
        return {"rows": 0, "positives": 0, "auc": None, "gauc": None, "logloss": None,
                "pred_mean": None, "label_mean": None, "calibration": None, "ece": None}
    x = logits.astype(np.float64)
    y = labels.astype(np.float64)
    logloss = float(np.mean(np.logaddexp(0.0, x) - y * x))
    prob = 1.0 / (1.0 + np.exp(-x)) if probs is None else probs.astype(np.float64)
    pred_mean, label_mean = float(prob.mean()), float(y.mean())
    return {
        "rows": n,
        "positives": int(y.sum()),
        "auc": auc(y, x),
        "gauc": gauc(y, x, users) if users is not None else None,
        "logloss": logloss,
        "pred_mean": pred_mean,
        "label_mean": label_mean,
        "calibration": pred_mean / label_mean if label_mean > 0 else None,
        "ece": expected_calibration_error(y, prob),
    }


@register_kind
class Binary(TaskKind):
    name: ClassVar[str] = "binary"
    probability: ClassVar[bool] = True
    headline: ClassVar[str] = "auc"
    higher_is_better: ClassVar[bool] = True
    history_keys: ClassVar[tuple[str, ...]] = ("auc", "gauc", "logloss")
    loss_scale: ClassVar[float] = 1.0
    export_meaning: ClassVar[str] = "logit"
    units: ClassVar[str] = "probability"

    def invalid_labels(self, x: np.ndarray, transform: str = "none") -> tuple[np.ndarray, str]:
        return (x != 0) & (x != 1), "must be 0 or 1"

    def random_labels(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randint(0, 2, (n,), generator=generator).float()

    def planted_labels(self, logit: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return (torch.rand(logit.shape[0], generator=generator) < torch.sigmoid(logit - 1.0)).float()

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(out, y, reduction="none")

    def to_units(
        self, out: torch.Tensor, transform: str = "none", params: Params | None = None,
        scenario: torch.Tensor | None = None,
    ) -> torch.Tensor:
        params = params or {}
        logit = out + params["logit_offset"] if params.get("logit_offset") else out
        cal = params.get("calibrator")
        if not cal:
            return torch.sigmoid(logit)
        if cal["method"] == "platt":
            a, b = per_scenario(cal["a"], scenario, logit), per_scenario(cal["b"], scenario, logit)
            return torch.sigmoid(a * logit + b)
        # isotonic: one knot table per scenario, on the (offset) probability
        p = torch.sigmoid(logit)
        res = torch.empty_like(p)
        idx = scenario.long() if scenario is not None else torch.zeros_like(p, dtype=torch.long)
        for s, (kx, ky) in enumerate(zip(cal["x"], cal["y"], strict=True)):
            mask = idx == s
            if bool(mask.any()):
                res[mask] = interp(p[mask], kx, ky)
        return res

    def fit_params(
        self, out: np.ndarray, y: np.ndarray, scenario: np.ndarray, num_scenarios: int, transform: str,
        calibration: str, base: Params | None = None,
    ) -> Params:
        params: Params = dict(base or {})
        if calibration == "none":
            return params
        if calibration not in CALIBRATIONS:
            raise ValueError(f"unknown calibration {calibration!r}; choose one of {list(CALIBRATIONS)}")
        logit = out.astype(np.float64) + float(params.get("logit_offset") or 0.0)
        fit = _fit_platt_logit if calibration == "platt" else _fit_isotonic_prob
        pooled = fit(logit, y)
        per: list[Any] = []
        for s in range(num_scenarios):
            m = scenario == s
            enough = m.sum() >= MIN_CALIBRATION_ROWS and 0 < y[m].sum() < m.sum()
            per.append(fit(logit[m], y[m]) if enough else pooled)
        if calibration == "platt":
            params["calibrator"] = {"method": "platt", "a": [p[0] for p in per], "b": [p[1] for p in per]}
        else:
            params["calibrator"] = {"method": "isotonic", "x": [p[0] for p in per], "y": [p[1] for p in per]}
        return params

    def cell(
        self, y: np.ndarray, out: np.ndarray, units: np.ndarray, users: np.ndarray | None, transform: str
    ) -> dict[str, Any]:
        return binary_cell(y, out, users, units)


def _fit_platt_logit(logit: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    return fit_platt(logit, y)


def _fit_isotonic_prob(logit: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float]]:
    return fit_isotonic(1.0 / (1.0 + np.exp(-logit)), y)
