"""HAMUR (Li et al., "HAMUR: Hyper Adapter for Multi-Domain Recommendation", CIKM 2023,
https://arxiv.org/abs/2309.06217).

A shared backbone MLP with an *adapter* after each hidden layer: down-projection, ReLU, up-projection and a
residual, ``h ← h + U(ReLU(D h))``. The adapter's parameters are not stored per domain but *generated* by a
hyper-network shared by all domains from a domain-aware instance representation (the input embedding ⊕
the domain embedding), so domains share what they have in common and each instance gets its own adapter.
To keep generation cheap the paper factorises each generated matrix; here ``D(z) = A_d K_d(z) B_d`` and
``U(z) = A_u K_u(z) B_u`` with shared ``A, B`` and a small ``k × k`` core ``K(z)`` generated per instance,
plus a per-domain bias (the domain-specific part of the adapter). Multi-task: a tower per task over the
adapted backbone (the paper has one output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import MLP, FieldEmbedding, TaskHeads
from msmtrec.models.base import ModelConfig, MultiTaskModel, register, require


@dataclass
class HAMURConfig(ModelConfig):
    hidden_dims: tuple[int, ...] = (128, 64)
    """Hidden sizes of the shared backbone; an adapter follows each."""
    adapter_dim: int = 16
    """Bottleneck size of every adapter."""
    core_dim: int = 8
    """Size k of the generated ``k × k`` cores."""
    scenario_dim: int = 8
    """Size of the domain embedding."""
    hyper_dims: tuple[int, ...] = (32,)
    """Hidden sizes of the hyper-network."""


class HyperAdapter(nn.Module):
    """``h + U(z) ReLU(D(z) h) + b_s`` with ``D, U`` factorised around generated ``k × k`` cores."""

    def __init__(self, dim: int, bottleneck: int, core: int, num_scenarios: int) -> None:
        super().__init__()

        def factor(a: int, b: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(a, b).uniform_(-1 / math.sqrt(a), 1 / math.sqrt(a)))

        self.down_a, self.down_b = factor(dim, core), factor(core, bottleneck)
        self.up_a, self.up_b = factor(bottleneck, core), nn.Parameter(torch.zeros(core, dim))  # starts as identity
        self.bias = nn.Parameter(torch.zeros(num_scenarios, dim))
        self.core = core

    def forward(self, h: torch.Tensor, cores: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """``cores``: ``[B, 2, k, k]`` generated down/up cores of each row."""
        down = torch.bmm((h @ self.down_a).unsqueeze(1), cores[:, 0]).squeeze(1) @ self.down_b
        up = torch.bmm((F.relu(down) @ self.up_a).unsqueeze(1), cores[:, 1]).squeeze(1) @ self.up_b
        return h + up + self.bias.index_select(0, scenario)


@register("hamur")
class HAMUR(MultiTaskModel):
    Config = HAMURConfig

    def __init__(self, schema: Schema, config: HAMURConfig) -> None:
        super().__init__(schema, config)
        c = config
        require(len(c.hidden_dims) > 0, "hamur: hidden_dims must not be empty")
        require(c.adapter_dim >= 1 and c.core_dim >= 1, "hamur: adapter_dim and core_dim must be >= 1")
        n_scen = schema.num_scenarios
        in_dim = self.flat_dim
        self.embedding = FieldEmbedding(schema, c.embed_dim)
        self.scenario_embedding = nn.Embedding(n_scen, c.scenario_dim)
        nn.init.normal_(self.scenario_embedding.weight, std=0.1)
        sizes = [in_dim, *c.hidden_dims]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.adapters = nn.ModuleList(HyperAdapter(d, c.adapter_dim, c.core_dim, n_scen) for d in c.hidden_dims)
        self.hyper = MLP(in_dim + c.scenario_dim, c.hyper_dims)
        self.hyper_out = nn.Linear(self.hyper.out_dim, len(c.hidden_dims) * 2 * c.core_dim**2)
        self.dropout = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.heads = TaskHeads(schema, sizes[-1], c.tower_dims, c.dropout, c.funnel)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        scenario = batch["scenario"]
        x = self.embedding(batch).flatten(1)
        z = torch.cat([x, self.scenario_embedding(scenario)], dim=1)  # domain-aware instance representation
        k = self.config.core_dim
        cores = self.hyper_out(self.hyper(z)).view(x.shape[0], len(self.layers), 2, k, k)
        h = x
        for i, (layer, adapter) in enumerate(zip(self.layers, self.adapters, strict=True)):
            h = self.dropout(adapter(F.relu(layer(h)), cores[:, i], scenario))
        return self.heads([h] * len(self.task_names))
