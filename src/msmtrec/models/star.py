"""STAR (Sheng et al., "One Model to Serve All: Star Topology Adaptive Recommender for Multi-Domain CTR
Prediction", CIKM 2021, arXiv 2101.11427), extended to several tasks with one tower per task.

Partitioned normalisation (per-scenario statistics and scale/shift), star-topology FC layers (shared weight
⊙ scenario weight) and an auxiliary network on the scenario embedding whose logit is added to every task's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import AuxiliaryNetwork, FieldEmbedding, StarNetwork, TaskHeads
from msmtrec.models.base import ModelConfig, MultiTaskModel, Param, register, require


@dataclass
class STARConfig(ModelConfig):
    star_dims: tuple[int, ...] = (64, 64)
    """Hidden sizes of the star-topology network."""
    aux_dims: tuple[int, ...] = (16,)
    """Hidden sizes of the auxiliary scenario network."""
    scenario_dim: int = 8
    """Size of the auxiliary network's scenario embedding."""


@register("star")
class STAR(MultiTaskModel):
    Config = STARConfig

    @classmethod
    def search_space(cls) -> dict[str, Param]:
        """The default space plus this model's own sizes (see :meth:`MultiTaskModel.search_space`)."""
        return {
            **super().search_space(),
            "model.star_dims": Param.choice((64,), (64, 64), (128, 64), (256, 128)),
            "model.aux_dims": Param.choice((16,), (32,)),
        }

    def __init__(self, schema: Schema, config: STARConfig) -> None:
        super().__init__(schema, config)
        require(len(config.star_dims) > 0, "star: star_dims must not be empty")
        self.embedding = FieldEmbedding(schema, config.embed_dim)
        in_dim = self.flat_dim
        self.base = StarNetwork(in_dim, config.star_dims, schema.num_scenarios, config.dropout)
        self.aux = AuxiliaryNetwork(
            in_dim,
            schema.num_scenarios,
            len(self.task_names),
            config.scenario_dim,
            config.aux_dims,
            config.dropout,
        )
        self.heads = TaskHeads(schema, self.base.out_dim, config.tower_dims, config.dropout, config.funnel)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        scenario = batch["scenario"]
        x = self.embedding(batch).flatten(1)
        h = self.base(x, scenario)
        return self.heads([h] * len(self.task_names), self.aux(x, scenario))
