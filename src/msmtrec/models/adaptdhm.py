"""AdaptDHM (Li et al., "AdaptDHM: Adaptive Distribution Hierarchical Model for Multi-Domain CTR
Prediction", 2022, https://arxiv.org/abs/2211.12105).

Domains given by the business are not always the distributions the data falls into. AdaptDHM's
*distribution adaptation* module routes each sample to one of ``K`` learnt clusters: a shared bottom encodes
the sample, the sample goes to the cluster centre it is most similar to (cosine), and the centres move
towards the mean of the samples routed to them (an exponential moving average, updated per cluster from the
batch, like the paper's dynamic routing updates). Each cluster has its own *customised* layers; a row runs
only its own cluster's (rows grouped by cluster with :func:`~msmtrec.layers.experts.scenario_matmul`, the
cluster index playing the scenario's role), and task towers follow.

Multi-scenario: the scenario embedding is one of the bottom's inputs, so clusters can follow scenarios where
the data says so and cut across them where it does not. Multi-task: a tower per task (the paper has one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import MLP, FieldEmbedding, ScenarioLinear, TaskHeads
from msmtrec.layers.context import ScenarioField
from msmtrec.layers.experts import scenario_matmul
from msmtrec.models.base import ModelConfig, MultiTaskModel, capturing_graph, register, require


@dataclass
class AdaptDHMConfig(ModelConfig):
    bottom_dims: tuple[int, ...] = (64,)
    """Hidden sizes of the shared bottom (the last one is the routed representation)."""
    num_clusters: int = 4
    """Number of distribution clusters K."""
    cluster_dims: tuple[int, ...] = (64,)
    """Hidden sizes of each cluster's customised layers."""
    momentum: float = 0.1
    """Moving-average rate of the cluster centres."""
    temperature: float = 0.1
    """Temperature of the soft assignment reported by ``explain`` (routing itself is hard)."""


@register("adaptdhm")
class AdaptDHM(MultiTaskModel):
    Config = AdaptDHMConfig
    centres: torch.Tensor

    def __init__(self, schema: Schema, config: AdaptDHMConfig) -> None:
        super().__init__(schema, config)
        c = config
        require(c.num_clusters >= 1, "adaptdhm: num_clusters must be >= 1")
        require(len(c.bottom_dims) > 0 and len(c.cluster_dims) > 0, "adaptdhm: bottom_dims and cluster_dims set")
        require(0 < c.momentum <= 1 and c.temperature > 0, "adaptdhm: need 0 < momentum <= 1, temperature > 0")
        self.embedding = FieldEmbedding(schema, c.embed_dim)
        self.scenario_field = ScenarioField(schema.num_scenarios, c.embed_dim)
        self.bottom = MLP((schema.num_fields + 1) * c.embed_dim, c.bottom_dims, c.dropout)
        self.register_buffer("centres", F.normalize(torch.randn(c.num_clusters, self.bottom.out_dim), dim=1))
        sizes = [self.bottom.out_dim, *c.cluster_dims]
        self.clusters = nn.ModuleList(
            ScenarioLinear(a, b, c.num_clusters) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.dropout = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.heads = TaskHeads(schema, sizes[-1], c.tower_dims, c.dropout, c.funnel)

    def _run(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        h = self.bottom(self.scenario_field(self.embedding(batch), batch["scenario"]).flatten(1))
        similarity = F.normalize(h, dim=1) @ self.centres.t()  # [B, K] cosine
        cluster = similarity.argmax(dim=1)
        if self.training:
            self._update_centres(h.detach(), cluster)
        rep = self._customised(h, cluster)
        soft = (similarity / self.config.temperature).softmax(dim=1)
        return self.heads([rep] * len(self.task_names)), {"gates/level0/cluster": soft}

    def _customised(self, h: torch.Tensor, cluster: torch.Tensor) -> torch.Tensor:
        """Each row through its own cluster's layers: rows grouped by cluster in eager mode, gathered weights
        in a captured graph (not the ``fixed_scenario`` shortcut: the cluster is not the scenario)."""
        strategy = "gather" if capturing_graph() else "segment"
        x = h.unsqueeze(1)
        for layer in self.clusters:
            y = scenario_matmul(x, layer.weight, cluster, strategy) + layer.bias.index_select(0, cluster)
            x = self.dropout(F.relu(y))
        return x.squeeze(1)

    @torch.no_grad()
    def _update_centres(self, h: torch.Tensor, cluster: torch.Tensor) -> None:
        """Move each centre present in the batch towards the mean direction of its rows (others stay)."""
        k = self.centres.shape[0]
        count = h.new_zeros(k).index_add(0, cluster, h.new_ones(h.shape[0]))
        total = h.new_zeros(k, h.shape[1]).index_add(0, cluster, F.normalize(h, dim=1))
        mean = total / count.clamp(min=1.0).unsqueeze(1)
        moved = F.normalize((1 - self.config.momentum) * self.centres + self.config.momentum * mean, dim=1)
        self.centres.copy_(torch.where((count > 0).unsqueeze(1), moved, self.centres))

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[0]

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``gates/level0/cluster``: ``[B, K]`` soft cluster assignment (the row runs its argmax cluster)."""
        return self._run(batch)[1]
