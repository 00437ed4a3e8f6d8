"""Experts, gates and scenario-specific weights: the pieces every mixture-of-experts model is built from.

* :class:`ExpertBank` runs ``n`` independent MLP experts on one input and stacks them to ``[B, n, d]``;
* :class:`ScenarioLinear` / :class:`ScenarioExpertBank` hold one set of weights per scenario and *gather*
  each row's own scenario weights (``weight[scenario]``), so a row only pays for its own scenario's
  branch and the graph has no data-dependent shapes (no boolean masks, no per-scenario Python branches);
* :class:`Gate` is a linear softmax gate; :func:`mix` takes the gate-weighted sum of expert outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from msmtrec.layers.mlp import MLP


class ExpertBank(nn.Module):
    """``n`` independent MLP experts over the same input → ``[B, n, out_dim]``."""

    def __init__(self, in_dim: int, num_experts: int, dims: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        if num_experts < 1 or not dims:
            raise ValueError("an expert bank needs at least one expert and one hidden size")
        self.experts = nn.ModuleList(MLP(in_dim, dims, dropout) for _ in range(num_experts))
        self.num_experts = num_experts
        self.out_dim = int(dims[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([e(x) for e in self.experts], dim=1)


class ScenarioLinear(nn.Module):
    """A linear map with its own weights per scenario (and per expert): ``[B, n, in] → [B, n, out]``.

    Rows gather their scenario's weights (``[B, n, in, out]``), which costs memory proportional to the
    batch but keeps compute at one branch per row and the graph free of data-dependent control flow.
    """

    def __init__(self, in_dim: int, out_dim: int, num_scenarios: int, num_experts: int = 1) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.num_experts = in_dim, out_dim, num_experts
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(num_scenarios, num_experts, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_scenarios, num_experts, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bni,bnio->bno", x, self.weight[scenario]) + self.bias[scenario]

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """Every scenario's branch on every row, ``[B, S, n, in] → [B, S, n, out]`` (HiNet's SAN needs this)."""
        return torch.einsum("bsni,snio->bsno", x, self.weight) + self.bias

    def extra_flops(self) -> int:
        """One scenario's weights per row (see :func:`msmtrec.models.base.estimate_flops`)."""
        return 2 * self.num_experts * self.in_dim * self.out_dim


class ScenarioExpertBank(nn.Module):
    """``n`` MLP experts *per scenario*; each row runs only its own scenario's experts → ``[B, n, d]``."""

    def __init__(
        self, in_dim: int, num_experts: int, dims: Sequence[int], num_scenarios: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if num_experts < 1 or not dims:
            raise ValueError("a scenario expert bank needs at least one expert and one hidden size")
        sizes = [in_dim, *dims]
        self.layers = nn.ModuleList(
            ScenarioLinear(a, b, num_scenarios, num_experts) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.num_experts = num_experts
        self.num_scenarios = num_scenarios
        self.out_dim = int(dims[-1])

    def forward(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(1).expand(-1, self.num_experts, -1)
        for layer in self.layers:
            h = self.dropout(F.relu(layer(h, scenario)))
        return h

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """All scenarios' experts on every row → ``[B, S, n, d]``."""
        h = x[:, None, None, :].expand(-1, self.num_scenarios, self.num_experts, -1)
        for layer in self.layers:
            h = self.dropout(F.relu(layer.forward_all(h)))
        return h


class Gate(nn.Module):
    """Softmax gate: ``[B, in] → [B, n]`` weights that sum to one."""

    def __init__(self, in_dim: int, num_experts: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.proj(x), dim=-1)


def mix(weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Gate-weighted sum: ``[B, n]`` × ``[B, n, d]`` → ``[B, d]``."""
    return torch.einsum("bn,bnd->bd", weights, experts)
