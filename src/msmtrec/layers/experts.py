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


ONE_HOT_MAX_SCENARIOS = 8
"""Up to this many scenarios, scenario-specific matmuls use the one-hot formulation (see below)."""


def scenario_matmul(
    x: torch.Tensor, weight: torch.Tensor, scenario: torch.Tensor, strategy: str = "auto"
) -> torch.Tensor:
    """Row ``b`` times its own scenario's weight: ``x [B, n, in]``, ``weight [S, n, in, out]`` → ``[B, n, out]``.

    Two exact, export-friendly formulations (no masks, no data-dependent shapes):

    * ``"gather"``: ``weight[scenario]`` gives each row its own ``[n, in, out]`` weights, then a batched
      matmul. One branch of arithmetic per row, but ``B · n · in · out`` memory traffic forward and an
      index-accumulate backward, which is slow on CPU.
    * ``"one_hot"``: place ``x`` in its scenario's block of a ``[B, S · in]`` input (zeros elsewhere) and do
      one dense matmul with the ``[S · in, out]`` stacked weights. The zero blocks contribute nothing, so the
      result is the row's own branch; it costs ``S×`` the multiply-adds but no per-row weight copies, and
      for the handful of scenarios of a multi-scenario model it is an order of magnitude faster.

    ``"auto"`` picks one-hot up to :data:`ONE_HOT_MAX_SCENARIOS` scenarios, gather beyond.
    """
    num_scenarios, n, in_dim, out_dim = weight.shape
    if strategy == "auto":
        strategy = "one_hot" if num_scenarios <= ONE_HOT_MAX_SCENARIOS else "gather"
    if strategy == "gather":
        w = weight[scenario].reshape(-1, in_dim, out_dim)  # [B·n, in, out]
        return torch.bmm(x.reshape(-1, 1, in_dim), w).reshape(x.shape[0], n, out_dim)
    if strategy != "one_hot":
        raise ValueError(f"unknown scenario matmul strategy {strategy!r}")
    one_hot = F.one_hot(scenario, num_scenarios).to(x.dtype)  # [B, S]
    blocks = (one_hot[:, :, None, None] * x[:, None, :, :]).permute(2, 0, 1, 3).reshape(n, -1, num_scenarios * in_dim)
    stacked = weight.permute(1, 0, 2, 3).reshape(n, num_scenarios * in_dim, out_dim)
    return torch.bmm(blocks, stacked).permute(1, 0, 2)


class ScenarioLinear(nn.Module):
    """A linear map with its own weights per scenario (and per expert): ``[B, n, in] → [B, n, out]``.

    Each row is multiplied by its own scenario's weights via :func:`scenario_matmul`, so the graph has no
    data-dependent control flow and no Python loop over scenarios.
    """

    def __init__(
        self, in_dim: int, out_dim: int, num_scenarios: int, num_experts: int = 1, strategy: str = "auto"
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.num_experts = in_dim, out_dim, num_experts
        self.strategy = strategy
        bound = 1.0 / math.sqrt(in_dim)
        shape = (num_scenarios, num_experts, in_dim, out_dim)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_scenarios, num_experts, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        return scenario_matmul(x, self.weight, scenario, self.strategy) + self.bias[scenario]

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """Every scenario's branch on every row: ``[B, S, n, in] → [B, S, n, out]`` (for HiNet's SAN)."""
        return torch.einsum("bsni,snio->bsno", x, self.weight) + self.bias

    def extra_flops(self) -> int:
        """One scenario's branch per row (see :func:`msmtrec.models.base.estimate_flops`)."""
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


class GateNU(nn.Module):
    """PEPNet's gate neural unit: ``γ · sigmoid(MLP(x))`` in ``(0, γ)``, γ = 2 by default.

    With γ = 2 an untrained gate (output ≈ 1) leaves what it scales unchanged, and a trained one can both
    amplify and suppress, which a plain sigmoid (at most 1) cannot.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 64, gamma: float = 2.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.sigmoid(self.net(x))
