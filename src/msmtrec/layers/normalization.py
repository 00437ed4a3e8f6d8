"""Partitioned normalisation (PN) from STAR (Sheng et al., CIKM 2021, arXiv 2101.11427).

Batch normalisation over a multi-scenario batch mixes the scenarios' statistics: a large scenario sets the
mean and variance that a small one is normalised with, and the running statistics served at inference are
the traffic-weighted blend. PN keeps moving statistics *per scenario* and normalises each row with its own
scenario's statistics, then applies ``(γ · γ_s) x̂ + (β + β_s)``: a shared scale/shift refined by the
row's scenario.

Per-scenario batch moments are computed with ``index_add`` over the scenario index (no Python loop over rows
or scenarios, no boolean masks), so the layer traces and exports with static shapes.
"""

from __future__ import annotations

import torch
from torch import nn


class PartitionedNorm(nn.Module):
    """``[B, dim]`` features + ``[B]`` scenario ids → per-scenario normalised features."""

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, dim: int, num_scenarios: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.dim, self.num_scenarios, self.eps, self.momentum = dim, num_scenarios, eps, momentum
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.scenario_weight = nn.Parameter(torch.ones(num_scenarios, dim))
        self.scenario_bias = nn.Parameter(torch.zeros(num_scenarios, dim))
        self.register_buffer("running_mean", torch.zeros(num_scenarios, dim))
        self.register_buffer("running_var", torch.ones(num_scenarios, dim))

    def forward(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        # The affine parameters are combined per scenario ([S, dim], independent of the batch size) before
        # each row picks its own, so the per-row work is one gather and one fused multiply-add.
        scale = self.weight * self.scenario_weight  # γ · γ_s
        shift = self.bias + self.scenario_bias  # β + β_s
        if self.training:
            zeros = x.new_zeros(self.num_scenarios, self.dim)
            count = x.new_zeros(self.num_scenarios).index_add(0, scenario, x.new_ones(x.shape[0]))
            denom = count.clamp(min=1.0).unsqueeze(1)
            mean = zeros.index_add(0, scenario, x) / denom  # [S, dim]
            centred = x - mean.index_select(0, scenario)
            var = zeros.index_add(0, scenario, centred.square()) / denom  # biased, as batch norm uses
            self._update_running(mean, var, count)
            row_scale = (torch.rsqrt(var + self.eps) * scale).index_select(0, scenario)
            return torch.addcmul(shift.index_select(0, scenario), centred, row_scale)
        # eval: (x - μ_s) / σ_s · γγ_s + ββ_s folded into x · a_s + c_s
        a = torch.rsqrt(self.running_var + self.eps) * scale
        c = shift - self.running_mean * a
        return torch.addcmul(c.index_select(0, scenario), x, a.index_select(0, scenario))

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        """Move only the statistics of scenarios present in the batch (absent ones keep theirs)."""
        present = (count > 0).unsqueeze(1)
        unbiased = var * (count / (count - 1.0).clamp(min=1.0)).unsqueeze(1)
        m = self.momentum
        new_mean = (1.0 - m) * self.running_mean + m * mean.detach()
        new_var = (1.0 - m) * self.running_var + m * unbiased.detach()
        self.running_mean.copy_(torch.where(present, new_mean, self.running_mean))
        self.running_var.copy_(torch.where(present, new_var, self.running_var))
