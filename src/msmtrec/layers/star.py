"""STAR building blocks (Sheng et al., "One Model to Serve All: Star Topology Adaptive Recommender",
CIKM 2021, arXiv 2101.11427): star-topology fully connected layers and the auxiliary scenario network.

A star-topology layer has one shared weight ``W`` and one weight ``W_s`` per scenario; a row of scenario
``s`` uses ``W ⊙ W_s`` and bias ``b + b_s``. Scenario weights start at one and scenario biases at zero, so
the network starts as a plain shared MLP and learns scenario deviations. The combined weights are formed
once per scenario and each row is multiplied by its own scenario's (see :func:`scenario_matmul`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from msmtrec.layers.experts import relu_dropout, scenario_matmul
from msmtrec.layers.mlp import MLP
from msmtrec.layers.normalization import PartitionedNorm


class StarLinear(nn.Module):
    """Star-topology linear layer. With ``scenario_specific=False`` it is a plain linear layer whose
    shared parameters have the same names and shapes (so a "no STAR" ablation only drops the scenario part).
    """

    def __init__(
        self, in_dim: int, out_dim: int, num_scenarios: int, scenario_specific: bool = True, strategy: str = "auto"
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.strategy = in_dim, out_dim, strategy
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scenario_specific = scenario_specific
        if scenario_specific:
            self.scenario_weight = nn.Parameter(torch.ones(num_scenarios, in_dim, out_dim))
            self.scenario_bias = nn.Parameter(torch.zeros(num_scenarios, out_dim))

    def forward(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        if not self.scenario_specific:
            return x @ self.weight + self.bias
        # Combine once per scenario ([S, in, out], independent of the batch), then multiply each row by its
        # own scenario's combined weight (see scenario_matmul for the formulations).
        combined = (self.weight * self.scenario_weight).unsqueeze(1)  # [S, 1, in, out]
        y = scenario_matmul(x.unsqueeze(1), combined, scenario, self.strategy).squeeze(1)
        return y + self.bias + self.scenario_bias.index_select(0, scenario)

    def extra_flops(self) -> int:
        return 2 * self.in_dim * self.out_dim


class StarNetwork(nn.Module):
    """PN on the input, then star-topology FC layers (ReLU, dropout): STAR's scenario-conditioned base.

    ``star=False`` keeps the shared FC weights (same names and shapes) and drops PN and the scenario
    weights, which is the "no STAR" ablation: a plain shared MLP.
    """

    def __init__(
        self, in_dim: int, dims: Sequence[int], num_scenarios: int, dropout: float = 0.0, star: bool = True
    ) -> None:
        super().__init__()
        self.norm = PartitionedNorm(in_dim, num_scenarios) if star else None
        sizes = [in_dim, *dims]
        self.layers = nn.ModuleList(
            StarLinear(a, b, num_scenarios, star) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.dropout = float(dropout)
        self.out_dim = sizes[-1]

    def forward(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x, scenario)
        for layer in self.layers:
            x = relu_dropout(layer(x, scenario), self.dropout, self.training)
        return x


class AuxiliaryNetwork(nn.Module):
    """STAR's auxiliary network: a small MLP on (scenario embedding ⊕ features) → one logit per output.

    Its logit is *added* to the main network's, which gives the scenario identity a direct, low-capacity
    path to the prediction that the deep network cannot dilute.
    """

    def __init__(
        self,
        in_dim: int,
        num_scenarios: int,
        num_outputs: int,
        scenario_dim: int = 8,
        dims: Sequence[int] = (32,),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.scenario_embedding = nn.Embedding(num_scenarios, scenario_dim)
        nn.init.normal_(self.scenario_embedding.weight, std=0.1)
        self.mlp = MLP(in_dim + scenario_dim, dims, dropout)
        self.out = nn.Linear(self.mlp.out_dim, num_outputs)

    def forward(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """``[B, in]``, ``[B]`` → ``[B, num_outputs]`` logits."""
        return self.out(self.mlp(torch.cat([self.scenario_embedding(scenario), x], dim=1)))
