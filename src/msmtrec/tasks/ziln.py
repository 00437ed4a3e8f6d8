"""``ziln``: a non-negative value that is zero for most rows (spend, lifetime value), predicted by the
zero-inflated log-normal model of Wang, Liu & Miao (2019), "A Deep Probabilistic Model for Customer
Lifetime Value Prediction" (arXiv:1912.07753).

The model emits three numbers per row (``output_dim = 3``): the purchase logit ``l``, and ``mu`` and
``s`` of the log-normal amount, ``sigma = softplus(s)``. The loss is BCE of ``l`` against ``y > 0`` plus,
on positive rows, the log-normal negative log-likelihood of ``y``. User units: the expected value
``E[y] = sigmoid(l) · exp(mu + sigma² / 2)`` in the label's own units (no transform: the log-normal *is*
the log transform). Like the regression smearing factor, a per-scenario scale (Σ label / Σ prediction on
validation) is fitted after training: the mean of a log-normal is sensitive to ``sigma`` (``exp(sigma²/2)``),
and with few positives the fitted ``sigma`` inflates it (HEF on Hillstrom: 2.7 × the actual mean without it).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from msmtrec.tasks.base import Params, TaskKind, per_scenario, register_kind
from msmtrec.tasks.regression import MIN_SMEARING_ROWS, units_cell
from msmtrec.tasks.scores import auc

SIGMA_FLOOR = 1e-3
MAX_LOG_MEAN = 60.0
"""exp() argument cap of the mean, so a wild output gives a huge but finite value."""
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def ziln_parts(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[B, 3]`` raw outputs → (purchase logit, mu, sigma)."""
    return out[..., 0], out[..., 1], F.softplus(out[..., 2]) + SIGMA_FLOOR


@register_kind
class ZILN(TaskKind):
    name: ClassVar[str] = "ziln"
    output_dim: ClassVar[int] = 3
    headline: ClassVar[str] = "rmse"
    higher_is_better: ClassVar[bool] = False
    history_keys: ClassVar[tuple[str, ...]] = ("rmse", "buy_auc", "mean_ratio")
    loss_scale: ClassVar[float] = 1.0
    export_meaning: ClassVar[str] = "[purchase logit, mu, softplus^-1(sigma)]"
    units: ClassVar[str] = "expected value in original units"

    def invalid_labels(self, x: np.ndarray, transform: str = "none") -> tuple[np.ndarray, str]:
        return ~(x >= 0) | ~np.isfinite(x), "must be a finite number >= 0"

    def random_labels(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        buy = torch.rand(n, generator=generator) < 0.3
        return torch.where(buy, torch.randn(n, generator=generator).exp(), torch.zeros(n))

    def planted_labels(self, logit: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        buy = torch.rand(logit.shape[0], generator=generator) < torch.sigmoid(logit - 1.0)
        amount = torch.exp(1.0 + 0.5 * logit + 0.3 * torch.randn(logit.shape[0], generator=generator))
        return torch.where(buy, amount, torch.zeros_like(amount))

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logit, mu, sigma = ziln_parts(out)
        positive = y > 0
        bce = F.binary_cross_entropy_with_logits(logit, positive.to(out.dtype), reduction="none")
        log_y = torch.log(torch.where(positive, y, torch.ones_like(y)))
        nll = log_y + torch.log(sigma) + _HALF_LOG_2PI + (log_y - mu) ** 2 / (2 * sigma**2)
        return bce + torch.where(positive, nll, torch.zeros_like(nll))

    def to_units(
        self, out: torch.Tensor, transform: str = "none", params: Params | None = None,
        scenario: torch.Tensor | None = None,
    ) -> torch.Tensor:
        logit, mu, sigma = ziln_parts(out)
        mean = torch.sigmoid(logit) * torch.exp((mu + sigma**2 / 2).clamp(max=MAX_LOG_MEAN))
        scale = (params or {}).get("scale")
        return mean if scale is None else mean * per_scenario(scale, scenario, mean)

    def fit_params(
        self, out: np.ndarray, y: np.ndarray, scenario: np.ndarray, num_scenarios: int, transform: str,
        calibration: str, base: Params | None = None,
    ) -> Params:
        params: Params = dict(base or {})
        if out.size == 0:
            return params
        pred = self.to_units(torch.from_numpy(out.astype(np.float64))).numpy()

        def ratio(m: np.ndarray) -> float:
            return float(y[m].sum() / pred[m].sum()) if pred[m].sum() > 0 else 1.0

        pooled = ratio(np.ones_like(y, dtype=bool))
        params["scale"] = [
            ratio(scenario == s) if (scenario == s).sum() >= MIN_SMEARING_ROWS else pooled for s in range(num_scenarios)
        ]
        return params

    def cell(
        self, y: np.ndarray, out: np.ndarray, units: np.ndarray, users: np.ndarray | None, transform: str
    ) -> dict[str, Any]:
        n = int(y.shape[0])
        if n == 0:
            return {"rows": 0, "positives": 0, "rmse": None, "mae": None, "buy_auc": None, **units_cell(y, units)}
        err = units.astype(np.float64) - y.astype(np.float64)
        return {
            "rows": n,
            "positives": int((y > 0).sum()),
            "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))),
            "buy_auc": auc((y > 0).astype(np.float64), out[:, 0]),
            **units_cell(y, units),
        }
