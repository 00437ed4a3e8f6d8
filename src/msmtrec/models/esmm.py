"""ESMM (Ma et al., "Entire Space Multi-Task Model: An Effective Approach for Estimating Post-Click
Conversion Rate", SIGIR 2018).

A CTR tower and a CVR tower over shared embeddings; the conversion output is pCTCVR = pCTR · pCVR, so both
towers train on the entire exposure space and the CVR tower is free of sample-selection bias. Generalised:
every task has its own tower over the shared embeddings, and each task declared ``inside`` a parent is the
product with its parent; a schema with no funnel simply gets independent towers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import FieldEmbedding, TaskHeads
from msmtrec.models.base import ModelConfig, MultiTaskModel, Param, register


@dataclass
class ESMMConfig(ModelConfig):
    tower_dims: tuple[int, ...] = (128, 64)
    """Hidden sizes of each task's tower (ESMM's towers are the whole network above the embeddings)."""


@register("esmm")
class ESMM(MultiTaskModel):
    Config = ESMMConfig

    @classmethod
    def search_space(cls) -> dict[str, Param]:
        """The default space plus this model's own sizes (see :meth:`MultiTaskModel.search_space`)."""
        return {
            **super().search_space(),
            "model.tower_dims": Param.choice((64, 32), (128, 64), (192, 64), (256, 128)),
        }

    def __init__(self, schema: Schema, config: ESMMConfig) -> None:
        super().__init__(schema, config)
        self.embedding = FieldEmbedding(schema, config.embed_dim)
        in_dim = self.flat_dim
        self.heads = TaskHeads(schema, in_dim, config.tower_dims, config.dropout, config.funnel)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = self.embedding(batch).flatten(1)
        return self.heads([x] * len(self.task_names))
