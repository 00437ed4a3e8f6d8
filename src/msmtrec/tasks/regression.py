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
    """Mean prediction vs mean label in user units, and their ratio (1 = unbiased on average)."""
    if labels.shape[0] == 0:
        return {"pred_mean_units": None, "label_mean_units": None, "mean_ratio": None}
    p, y = float(preds.astype(np.float64).mean()), float(labels.astype(np.float64).mean())
    return {"pred_mean_units": p, "label_mean_units": y, "mean_ratio": p / y if y != 0 else None}


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
