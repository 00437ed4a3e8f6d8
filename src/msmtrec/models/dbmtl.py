"""DBMTL (Wang et al., "Deep Bayesian Multi-Target Learning for Recommender Systems", arXiv 2019,
https://arxiv.org/abs/1902.09154; the model TorchEasyRec ships as DBMTL).

Targets are not independent given the input: DBMTL factorises their joint as a Bayesian network,
``P(t_1, …, t_n | x) = Π_i P(t_i | t_1 … t_{i-1}, x)``. A shared bottom feeds one tower per task; each task's
*relation* layer reads its own tower output together with the relation outputs of every task before it,
so task ``i`` is conditioned on the hidden evidence of tasks ``1 … i-1``, and a linear output gives its
logit. The chain follows the tasks' declared order (put a funnel's parents first, as in the paper's
click → … → purchase). The scenario enters as one more embedded field.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import MLP, FieldEmbedding, compose_outputs, output_dims, task_output
from msmtrec.layers.context import ScenarioField
from msmtrec.models.base import ModelConfig, MultiTaskModel, register, require


@dataclass
class DBMTLConfig(ModelConfig):
    bottom_dims: tuple[int, ...] = (128, 64)
    """Hidden sizes of the shared bottom MLP."""
    tower_dims: tuple[int, ...] = (32,)
    """Hidden sizes of each task's tower."""
    relation_dims: tuple[int, ...] = (32,)
    """Hidden sizes of each task's relation layer (reads the earlier tasks' relation outputs)."""


@register("dbmtl")
class DBMTL(MultiTaskModel):
    Config = DBMTLConfig

    def __init__(self, schema: Schema, config: DBMTLConfig) -> None:
        super().__init__(schema, config)
        c = config
        require(len(c.tower_dims) > 0 and len(c.relation_dims) > 0, "dbmtl: tower_dims and relation_dims must be set")
        self.embedding = FieldEmbedding(schema, c.embed_dim)
        self.scenario_field = ScenarioField(schema.num_scenarios, c.embed_dim)
        self.bottom = MLP((schema.num_fields + 1) * c.embed_dim, c.bottom_dims, c.dropout)
        n_tasks = len(self.task_names)
        self.towers = nn.ModuleList(MLP(self.bottom.out_dim, c.tower_dims, c.dropout) for _ in range(n_tasks))
        tower_out, rel_out = c.tower_dims[-1], c.relation_dims[-1]
        self.relations = nn.ModuleList(MLP(tower_out + i * rel_out, c.relation_dims, c.dropout) for i in range(n_tasks))
        self.outs = nn.ModuleList(nn.Linear(rel_out, k) for k in output_dims(schema))

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = self.scenario_field(self.embedding(batch), batch["scenario"]).flatten(1)
        h = self.bottom(x)
        relations: list[torch.Tensor] = []
        raw: list[torch.Tensor] = []
        for tower, relation, out in zip(self.towers, self.relations, self.outs, strict=True):
            r = relation(torch.cat([tower(h), *relations], dim=1))  # conditioned on every earlier task
            relations.append(r)
            raw.append(task_output(out(r)))
        return compose_outputs(self.schema, raw, self.config.funnel)
