"""Shared-Bottom (Caruana, 1997; the standard multi-task baseline): one shared MLP, one tower per task.

Hard parameter sharing: all tasks and scenarios share the bottom network, which is cheap but exposed to
negative transfer when tasks conflict — the seesaw that MMoE/PLE/HEF set out to fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import MLP, FieldEmbedding, TaskHeads
from msmtrec.models.base import ModelConfig, MultiTaskModel, Param, register


@dataclass
class SharedBottomConfig(ModelConfig):
    bottom_dims: tuple[int, ...] = (128, 64)
    """Hidden sizes of the shared bottom MLP."""


@register("shared_bottom")
class SharedBottom(MultiTaskModel):
    Config = SharedBottomConfig

    @classmethod
    def search_space(cls) -> dict[str, Param]:
        """The default space plus this model's own sizes (see :meth:`MultiTaskModel.search_space`)."""
        return {
            **super().search_space(),
            "model.bottom_dims": Param.choice((128, 64), (256, 128), (384, 128), (512, 256)),
        }

    def __init__(self, schema: Schema, config: SharedBottomConfig) -> None:
        super().__init__(schema, config)
        self.embedding = FieldEmbedding(schema, config.embed_dim)
        self.bottom = MLP(self.flat_dim, config.bottom_dims, config.dropout)
        self.heads = TaskHeads(schema, self.bottom.out_dim, config.tower_dims, config.dropout, config.funnel)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        h = self.bottom(self.embedding(batch).flatten(1))
        return self.heads([h] * len(self.task_names))
