"""MMoE (Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts",
KDD 2018): shared experts, one softmax gate per task, one tower per task.

Each task mixes the same experts with its own gate, so conflicting tasks can route to different experts —
soft parameter sharing instead of Shared-Bottom's hard sharing. Implemented as a CGC level with no
task-specific experts (the two are the same computation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import CGCLayer, FieldEmbedding, TaskHeads
from msmtrec.models.base import ModelConfig, MultiTaskModel, Param, register, require


@dataclass
class MMoEConfig(ModelConfig):
    num_experts: int = 4
    """Number of shared experts."""
    expert_dims: tuple[int, ...] = (64,)
    """Hidden sizes of every expert MLP (the last one is the expert output size)."""


@register("mmoe")
class MMoE(MultiTaskModel):
    Config = MMoEConfig

    @classmethod
    def search_space(cls) -> dict[str, Param]:
        """The default space plus this model's own sizes (see :meth:`MultiTaskModel.search_space`)."""
        return {
            **super().search_space(),
            "model.num_experts": Param.choice(2, 4, 6, 8),
            "model.expert_dims": Param.choice((64,), (128,), (128, 64), (256, 128)),
        }

    def __init__(self, schema: Schema, config: MMoEConfig) -> None:
        super().__init__(schema, config)
        require(
            config.num_experts >= 1 and len(config.expert_dims) > 0,
            "mmoe: need num_experts >= 1, expert_dims",
        )
        self.embedding = FieldEmbedding(schema, config.embed_dim)
        in_dim = self.flat_dim
        self.moe = CGCLayer(in_dim, self.task_names, config.num_experts, 0, config.expert_dims, config.dropout)
        self.heads = TaskHeads(schema, self.moe.out_dim, config.tower_dims, config.dropout, config.funnel)

    def _run(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        x = self.embedding(batch).flatten(1)
        reps, _, gates = self.moe([x] * len(self.task_names), x)
        return self.heads(reps), {f"gates/level0/{k}": v for k, v in gates.items()}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[0]

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[1]
