"""Weights generated from the scenario embedding (M2M's meta units, Zhang et al., WSDM 2022).

A meta unit's weights are a function of the scenario representation. With the scenario an index, that
function takes only ``S`` distinct values: :class:`ScenarioGeneratedLinear` generates the ``S`` weight
matrices once per forward pass (cost independent of the batch) and multiplies each row by its own
scenario's matrix with :func:`~msmtrec.layers.experts.scenario_matmul` (rows grouped by scenario), instead
of generating a ``[B, in, out]`` tensor per row as public implementations do.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from msmtrec.layers.experts import scenario_matmul


class ScenarioGeneratedLinear(nn.Module):
    """``[B, n, in]`` → ``[B, n, out]`` with ``W(s), b(s)`` generated from the scenario embedding ``s``."""

    def __init__(self, scenario_dim: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        # Start near a plain linear layer: a shared base weight plus a small generated deviation. The generator
        # is a plain matmul, not an nn.Linear, so per-sample FLOP estimates do not count a once-per-batch cost.
        bound = 1.0 / math.sqrt(in_dim)
        self.base = nn.Parameter(torch.empty(in_dim, out_dim).uniform_(-bound, bound))
        self.generator_weight = nn.Parameter(torch.randn(scenario_dim, in_dim * out_dim + out_dim) * 0.01 * bound)
        self.generator_bias = nn.Parameter(torch.zeros(in_dim * out_dim + out_dim))

    def forward(self, x: torch.Tensor, scenario: torch.Tensor, scenario_table: torch.Tensor) -> torch.Tensor:
        """``scenario_table``: ``[S, scenario_dim]``, every scenario's representation."""
        generated = torch.addmm(self.generator_bias, scenario_table, self.generator_weight)  # [S, in·out + out]
        weight = generated[:, : self.in_dim * self.out_dim].view(-1, 1, self.in_dim, self.out_dim) + self.base
        bias = generated[:, self.in_dim * self.out_dim :]
        n = x.shape[1]
        y = scenario_matmul(x, weight.expand(-1, n, -1, -1), scenario)
        return y + bias.index_select(0, scenario).unsqueeze(1)

    def extra_flops(self) -> int:
        return 2 * self.in_dim * self.out_dim
