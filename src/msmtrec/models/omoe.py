"""OMoE, the one-gate mixture-of-experts (Jacobs et al., "Adaptive Mixtures of Local Experts", Neural
Computation 1991; as the multi-task baseline of Ma et al., "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018, https://dl.acm.org/doi/10.1145/3219819.3220007).

Shared experts mixed by a *single* softmax gate into one representation that every task tower reads: the
step between Shared-Bottom (one fixed bottom) and MMoE (one gate per task). Multi-scenario: the paper has no
scenario, so the scenario enters as one more embedded field (see :mod:`msmtrec.layers.context`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import ExpertBank, FieldEmbedding, Gate, TaskHeads, mix
from msmtrec.layers.context import ScenarioField
from msmtrec.models.base import ModelConfig, MultiTaskModel, register, require


@dataclass
class OMoEConfig(ModelConfig):
    num_experts: int = 4
    """Number of shared experts."""
    expert_dims: tuple[int, ...] = (64,)
    """Hidden sizes of every expert MLP (the last one is the expert output size)."""


@register("omoe")
class OMoE(MultiTaskModel):
    Config = OMoEConfig

    def __init__(self, schema: Schema, config: OMoEConfig) -> None:
        super().__init__(schema, config)
        require(config.num_experts >= 1 and len(config.expert_dims) > 0, "omoe: need num_experts >= 1, expert_dims")
        self.embedding = FieldEmbedding(schema, config.embed_dim)
        self.scenario_field = ScenarioField(schema.num_scenarios, config.embed_dim)
        in_dim = (schema.num_fields + 1) * config.embed_dim
        self.experts = ExpertBank(in_dim, config.num_experts, config.expert_dims, config.dropout)
        self.gate = Gate(in_dim, config.num_experts)
        self.heads = TaskHeads(schema, self.experts.out_dim, config.tower_dims, config.dropout, config.funnel)

    def _run(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        x = self.scenario_field(self.embedding(batch), batch["scenario"]).flatten(1)
        w = self.gate(x)
        h = mix(w, self.experts(x))
        return self.heads([h] * len(self.task_names)), {"gates/level0/shared": w}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[0]

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``gates/level0/shared``: ``[B, n_experts]``, the one gate every task shares."""
        return self._run(batch)[1]
