"""AdaSparse (Yang et al., "AdaSparse: Learning Adaptively Sparse Structures for Multi-Domain Click-Through
Rate Prediction", CIKM 2022, https://arxiv.org/abs/2206.13108).

One shared network whose *structure* adapts to the domain: after every hidden layer a lightweight *pruner*
reads the domain embedding and emits one weighting factor per neuron; factors below a threshold are exactly
zero, so each domain uses its own sparse sub-network of the shared weights (the paper's "scaling with
ε-sparsity" factor, ``π = β·σ(z)`` kept where ``π ≥ ε``). A sparsity regulariser steers the share of pruned
neurons towards a target (``λ · |r − r*|`` with ``r`` the soft pruned share, the paper's control of the
sparsity ratio; off by default).

The pruner reads only the domain (scenario) embedding, so its factors take ``S`` values: they are computed
once per scenario and each row picks its own. Multi-task: a tower per task over the pruned network, the
extension Scenario-Wise-Rec's single-task version leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import FieldEmbedding, TaskHeads
from msmtrec.models.base import ModelConfig, MultiTaskModel, caches_regularizer, register, require


@dataclass
class AdaSparseConfig(ModelConfig):
    hidden_dims: tuple[int, ...] = (128, 64)
    """Hidden sizes of the shared, pruned network."""
    scenario_dim: int = 8
    """Size of the domain embedding the pruners read."""
    beta: float = 2.0
    """Factor range (0, β): β = 2 lets a neuron be amplified as well as damped."""
    epsilon: float = 0.25
    """Factors below ε are pruned to exactly 0."""
    sparsity_target: float = 0.2
    """Target share of pruned neurons r* for the regulariser."""
    sparsity_weight: float = 0.0
    """λ of the sparsity regulariser (0: off)."""


@register("adasparse")
class AdaSparse(MultiTaskModel):
    Config = AdaSparseConfig

    def __init__(self, schema: Schema, config: AdaSparseConfig) -> None:
        super().__init__(schema, config)
        c = config
        require(len(c.hidden_dims) > 0, "adasparse: hidden_dims must not be empty")
        require(0 <= c.epsilon < c.beta, "adasparse: need 0 <= epsilon < beta")
        require(c.sparsity_weight >= 0 and 0 <= c.sparsity_target < 1, "adasparse: bad sparsity settings")
        self.embedding = FieldEmbedding(schema, c.embed_dim)
        self.scenario_embedding = nn.Embedding(schema.num_scenarios, c.scenario_dim)
        nn.init.normal_(self.scenario_embedding.weight, std=0.1)
        sizes = [self.flat_dim, *c.hidden_dims]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.pruners = nn.ModuleList(nn.Linear(c.scenario_dim, b) for b in c.hidden_dims)
        self.dropout = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.heads = TaskHeads(schema, sizes[-1], c.tower_dims, c.dropout, c.funnel)
        self._sparsity: torch.Tensor | None = None

    def _factors(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per layer ``[S, d]`` neuron factors (pruned below ε), and the soft pruned share ``r``."""
        c = self.config
        factors, soft_pruned = [], []
        for pruner in self.pruners:
            pi = c.beta * torch.sigmoid(pruner(self.scenario_embedding.weight))
            factors.append(torch.where(pi >= c.epsilon, pi, torch.zeros_like(pi)))
            soft_pruned.append(torch.sigmoid((c.epsilon - pi) * 10.0 / c.beta).mean())
        return factors, torch.stack(soft_pruned).mean()

    def _run(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        scenario = batch["scenario"]
        factors, pruned = self._factors()
        h = self.embedding(batch).flatten(1)
        info: dict[str, torch.Tensor] = {}
        for lvl, (layer, pi) in enumerate(zip(self.layers, factors, strict=True)):
            row_pi = pi.index_select(0, scenario)
            h = self.dropout(F.relu(layer(h)) * row_pi)
            info[f"adasparse/layer{lvl}"] = row_pi
        self._sparsity = pruned if caches_regularizer() else None
        return self.heads([h] * len(self.task_names)), info

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[0]

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``adasparse/layer{l}``: ``[B, d_l]`` neuron factors of the row's scenario (0 = pruned)."""
        return self._run(batch)[1]

    def regularization_loss(self) -> torch.Tensor:
        """``λ · |r − r*|`` of the last forward pass (0 when off or before any forward)."""
        if self._sparsity is None or self.config.sparsity_weight == 0:
            return super().regularization_loss()
        return self.config.sparsity_weight * (self._sparsity - self.config.sparsity_target).abs()
