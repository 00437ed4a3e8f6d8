"""Single-task baseline: one independent network per task (or per (scenario, task) pair).

The reference point every multi-task model must beat: no sharing at all, hence no negative transfer and no
positive transfer either. ``per_scenario=True`` trains one network per (scenario, task) pair; rows gather
their own scenario's weights, so each row only runs its own branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import (
    MLP,
    FieldEmbedding,
    ScenarioExpertBank,
    ScenarioLinear,
    TaskHeads,
    compose_outputs,
    output_dims,
    task_output,
)
from msmtrec.models.base import ModelConfig, MultiTaskModel, Param, register


@dataclass
class SingleTaskConfig(ModelConfig):
    bottom_dims: tuple[int, ...] = (64,)
    """Hidden sizes of each task's network below its tower."""
    per_scenario: bool = False
    """One network per (scenario, task) instead of one per task (embeddings stay per task)."""
    share_embedding: bool = False
    """Share one embedding table between the task networks (False = fully independent networks)."""
    funnel: bool = False
    """Compose funnel tasks with their parent (couples the networks; off for a truly independent baseline)."""


@register("single_task")
class SingleTask(MultiTaskModel):
    Config = SingleTaskConfig

    @classmethod
    def search_space(cls) -> dict[str, Param]:
        """The default space plus this model's own sizes (see :meth:`MultiTaskModel.search_space`)."""
        return {
            **super().search_space(),
            "model.bottom_dims": Param.choice((64,), (128, 64), (192, 64), (256, 128)),
        }

    def __init__(self, schema: Schema, config: SingleTaskConfig) -> None:
        super().__init__(schema, config)
        n_tasks = len(self.task_names)
        n_emb = 1 if config.share_embedding else n_tasks
        self.embeddings = nn.ModuleList(FieldEmbedding(schema, config.embed_dim) for _ in range(n_emb))
        in_dim = self.flat_dim
        self.per_scenario = config.per_scenario
        if config.per_scenario:
            dims = [*config.bottom_dims, *config.tower_dims]
            self.scenario_nets = nn.ModuleList(
                ScenarioExpertBank(in_dim, 1, dims, schema.num_scenarios, config.dropout) for _ in range(n_tasks)
            )
            self.scenario_outs = nn.ModuleList(
                ScenarioLinear(dims[-1], k, schema.num_scenarios) for k in output_dims(schema)
            )
        else:
            self.bottoms = nn.ModuleList(MLP(in_dim, config.bottom_dims, config.dropout) for _ in range(n_tasks))
            out_dim = config.bottom_dims[-1] if config.bottom_dims else in_dim
            self.heads = TaskHeads(schema, out_dim, config.tower_dims, config.dropout, config.funnel)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        tokens = [emb(batch).flatten(1) for emb in self.embeddings]
        inputs = [tokens[min(i, len(tokens) - 1)] for i in range(len(self.task_names))]
        if not self.per_scenario:
            return self.heads([bottom(x) for bottom, x in zip(self.bottoms, inputs, strict=True)])
        scenario = batch["scenario"]
        raw = [
            task_output(out(net(x, scenario), scenario).reshape(len(scenario), -1))
            for net, out, x in zip(self.scenario_nets, self.scenario_outs, inputs, strict=True)
        ]
        return compose_outputs(self.schema, raw, self.config.funnel)
