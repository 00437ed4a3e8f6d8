"""PLE (Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for
Personalized Recommendations", RecSys 2020).

Shared and task-specific experts separated explicitly (CGC), stacked into several extraction levels. At each
non-final level a shared gate over *all* experts produces the input of the next level's shared experts, so
shared knowledge is progressively refined with what the task experts learnt (a frequent implementation
fault is to feed the shared experts the raw input at every level).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import FieldEmbedding, PLEStack, TaskHeads
from msmtrec.models.base import ModelConfig, MultiTaskModel, Param, register, require


@dataclass
class PLEConfig(ModelConfig):
    levels: int = 2
    """Number of extraction levels (1 = a single CGC layer)."""
    shared_experts: int = 2
    """Shared experts per level."""
    task_experts: int = 2
    """Task-specific experts per task per level."""
    expert_dims: tuple[int, ...] = (64,)
    """Hidden sizes of every expert MLP."""


@register("ple")
class PLE(MultiTaskModel):
    Config = PLEConfig

    @classmethod
    def search_space(cls) -> dict[str, Param]:
        """The default space plus this model's own sizes (see :meth:`MultiTaskModel.search_space`)."""
        return {
            **super().search_space(),
            "model.levels": Param.choice(1, 2, 3),
            "model.shared_experts": Param.choice(1, 2, 3, 4),
            "model.task_experts": Param.choice(1, 2),
            "model.expert_dims": Param.choice((64,), (96,), (128,), (128, 64)),
        }

    def __init__(self, schema: Schema, config: PLEConfig) -> None:
        super().__init__(schema, config)
        require(config.levels >= 1, "ple: levels must be >= 1")
        require(config.shared_experts + config.task_experts >= 1, "ple: need at least one expert")
        require(len(config.expert_dims) > 0, "ple: expert_dims must not be empty")
        self.embedding = FieldEmbedding(schema, config.embed_dim)
        self.extraction = PLEStack(
            self.flat_dim,
            self.task_names,
            config.levels,
            config.shared_experts,
            config.task_experts,
            config.expert_dims,
            config.dropout,
        )
        self.heads = TaskHeads(schema, self.extraction.out_dim, config.tower_dims, config.dropout, config.funnel)

    def _run(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        reps, gates = self.extraction(self.embedding(batch).flatten(1))
        return self.heads(reps), {f"gates/{k}": v for k, v in gates.items()}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[0]

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[1]
