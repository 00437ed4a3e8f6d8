"""``regression``: a real-valued target, optionally ``log1p``-transformed; MSE on the (transformed) value.

User units: the *expected* value in original units. For ``transform: none`` that is the output itself.
For ``log1p`` the model predicts ``f ≈ E[log1p y]``, and ``expm1(f)`` would be the geometric, not the
arithmetic mean (Hillstrom's spend: $0.03 predicted against $1.05 actual). A smearing factor (Duan, JASA
1983) corrects it without assuming a residual distribution: ``E[y | x] = exp(f(x)) · S − 1``. Duan's
estimate is ``S = mean(exp(log1p(y) − f))``; msmtrec uses its ratio form
``S = Σ (1 + y) / Σ exp(f)`` over the validation rows of the scenario (the same limit when the
multiplicative error is independent of ``x``, and it makes the mean prediction of each scenario equal its
mean label exactly on the validation split). A scenario with fewer than ``MIN_SMEARING_ROWS`` rows takes
the pooled factor.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch

from msmtrec.tasks.base import Params, TaskKind, per_scenario, register_kind

MIN_SMEARING_ROWS = 30


def regression_cell(labels: np.ndarray, preds: np.ndarray) -> dict[str, float | int | None]:
    """RMSE / MAE of one regression cell in the model's (transformed) target space."""
    n = int(labels.shape[0])
    if n == 0:
        return {"rows": 0, "rmse": None, "mae": None, "pred_mean": None, "label_mean": None}
    err = preds.astype(np.float64) - labels.astype(np.float64)
    return {
        "rows": n,
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "pred_mean": float(preds.astype(np.float64).mean()),
        "label_mean": float(labels.astype(np.float64).mean()),
    }


def units_cell(labels: np.ndarray, preds: np.ndarray) -> dict[str, float | None]:
    """Mean prediction vs mean label in user units, their ratio (1 = unbiased on average) and its 95 % CI.

    Why the interval: on a sparse value target the label mean of a test split is itself noisy (Hillstrom's
    spend: 47 buyers in the shipped test split, so its mean moves by about ±20 % between random splits), and a
    reader must be able to tell a biased model from an unlucky split. The interval is the delta-method one of
    a ratio of two means over the same rows (Cochran, *Sampling Techniques*, 6.3): ``R ± 1.96 · se`` with
    ``se = std(p − R·y) / (√n · mean(y))``; it is what the ratio of a calibrated model would vary by over
    test sets of this size.
    """
    empty = {"pred_mean_units": None, "label_mean_units": None, "mean_ratio": None,
             "mean_ratio_low": None, "mean_ratio_high": None}
    n = labels.shape[0]
    if n == 0:
        return empty
    pv, yv = preds.astype(np.float64), labels.astype(np.float64)
    p, y = float(pv.mean()), float(yv.mean())
    if y == 0:
        return {**empty, "pred_mean_units": p, "label_mean_units": y}
    ratio = p / y
    half = 1.96 * float(np.std(pv - ratio * yv, ddof=1)) / (np.sqrt(n) * abs(y)) if n > 1 else math.inf
    return {"pred_mean_units": p, "label_mean_units": y, "mean_ratio": ratio,
            "mean_ratio_low": ratio - half, "mean_ratio_high": ratio + half}


@register_kind
class Regression(TaskKind):
    name: ClassVar[str] = "regression"
    transforms: ClassVar[tuple[str, ...]] = ("none", "log1p")
    headline: ClassVar[str] = "rmse"
    higher_is_better: ClassVar[bool] = False
    history_keys: ClassVar[tuple[str, ...]] = ("rmse", "mae")
    loss_scale: ClassVar[float] = 0.5
    export_meaning: ClassVar[str] = "value"
    units: ClassVar[str] = "value in original units"

    def invalid_labels(self, x: np.ndarray, transform: str = "none") -> tuple[np.ndarray, str]:
        if transform == "log1p":
            return (x < 0) | ~np.isfinite(x), "must be a finite number >= 0 (the task uses log1p)"
        return ~np.isfinite(x), "must be a finite number"

    def encode_labels(self, x: np.ndarray, transform: str = "none") -> np.ndarray:
        return np.log1p(x) if transform == "log1p" else x

    def label_units(self, y: np.ndarray, transform: str = "none") -> np.ndarray:
        return np.expm1(y) if transform == "log1p" else y

    def random_labels(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, generator=generator).abs()

    def planted_labels(self, logit: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return logit + 0.1 * torch.randn(logit.shape[0], generator=generator)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (out - y) ** 2

    def to_units(
        self, out: torch.Tensor, transform: str = "none", params: Params | None = None,
        scenario: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if transform != "log1p":
            return out
        smearing = (params or {}).get("smearing")
        if smearing is None:
            return torch.expm1(out)
        return torch.exp(out) * per_scenario(smearing, scenario, out) - 1.0

    def fit_params(
        self, out: np.ndarray, y: np.ndarray, scenario: np.ndarray, num_scenarios: int, transform: str,
        calibration: str, base: Params | None = None,
    ) -> Params:
        params: Params = dict(base or {})
        if transform != "log1p" or out.size == 0:
            return params
        target, base = np.exp(y.astype(np.float64)), np.exp(out.astype(np.float64))
        pooled = float(target.sum() / base.sum())
        params["smearing"] = [
            float(target[m].sum() / base[m].sum()) if (m := scenario == s).sum() >= MIN_SMEARING_ROWS else pooled
            for s in range(num_scenarios)
        ]
        return params

    def cell(
        self, y: np.ndarray, out: np.ndarray, units: np.ndarray, users: np.ndarray | None, transform: str
    ) -> dict[str, Any]:
        return {**regression_cell(y, out), **units_cell(self.label_units(y, transform), units)}
