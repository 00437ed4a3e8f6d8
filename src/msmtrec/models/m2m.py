"""M2M (Zhang et al., "Leaving No One Behind: A Multi-Scenario Multi-Task Meta Learning Approach for
Advertiser Modeling", WSDM 2022, https://arxiv.org/abs/2201.06814).

A multi-scenario multi-task model whose scenario knowledge *generates* parameters. Experts (the expert
view) encode the input; a scenario representation drives two *meta units*:

* meta attention: for task ``t`` each expert ``E_i`` is scored with ``v_t · ReLU(W(s) [E_i ; e_t] + b(s))``,
  where ``e_t`` is a learnt task embedding and ``W(s), b(s)`` are generated from the scenario
  representation ``s``; the softmax of the scores mixes the experts;
* meta tower: residual layers ``h ← ReLU(W_l(s) h + b_l(s)) + h`` with generated weights, one tower per task.

Our scenario is an index, so its representation (a learnt embedding passed through a small MLP, the
paper's scenario knowledge representation) takes ``S`` values: the meta weights are generated once per
scenario and each row is multiplied by its own scenario's (:mod:`msmtrec.layers.meta`) rather than a
``[B, in, out]`` tensor being generated per row. The advertiser behaviour-sequence encoder of the paper's
expert view is our field embedding (sequence fields are pooled by it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import MLP, ExpertBank, FieldEmbedding, compose_outputs, mix, output_dims, task_output
from msmtrec.layers.meta import ScenarioGeneratedLinear
from msmtrec.models.base import ModelConfig, MultiTaskModel, register, require


@dataclass
class M2MConfig(ModelConfig):
    num_experts: int = 4
    """Experts of the expert view."""
    expert_dims: tuple[int, ...] = (64,)
    """Hidden sizes of every expert MLP (the last one is the representation size ``d``)."""
    scenario_dim: int = 8
    """Size of the scenario knowledge representation (every generated weight costs this many parameters)."""
    attention_dim: int = 16
    """Hidden size of the meta attention scorer."""
    meta_layers: int = 2
    """Residual meta layers in each task's meta tower."""


class MetaTask(nn.Module):
    """One task's meta attention over the experts and its meta tower → ``[B]`` raw output."""

    def __init__(self, d: int, scenario_dim: int, attention_dim: int, layers: int, out_dim: int = 1) -> None:
        super().__init__()
        self.task_embedding = nn.Parameter(torch.randn(d) * 0.1)
        self.score_hidden = ScenarioGeneratedLinear(scenario_dim, 2 * d, attention_dim)
        self.score_out = nn.Linear(attention_dim, 1, bias=False)
        self.tower = nn.ModuleList(ScenarioGeneratedLinear(scenario_dim, d, d) for _ in range(layers))
        self.out = nn.Linear(d, out_dim)

    def forward(
        self, experts: torch.Tensor, scenario: torch.Tensor, table: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        task = self.task_embedding.expand(experts.shape[0], experts.shape[1], -1)
        hidden = F.relu(self.score_hidden(torch.cat([experts, task], dim=2), scenario, table))  # [B, n, a]
        w = self.score_out(hidden).squeeze(-1).softmax(dim=1)  # [B, n]
        h = mix(w, experts).unsqueeze(1)
        for layer in self.tower:
            h = F.relu(layer(h, scenario, table)) + h
        return task_output(self.out(h.squeeze(1))), w


@register("m2m")
class M2M(MultiTaskModel):
    Config = M2MConfig

    def __init__(self, schema: Schema, config: M2MConfig) -> None:
        super().__init__(schema, config)
        c = config
        require(c.num_experts >= 1 and len(c.expert_dims) > 0, "m2m: need num_experts >= 1 and expert_dims")
        require(c.meta_layers >= 0, "m2m: meta_layers must be >= 0")
        self.embedding = FieldEmbedding(schema, c.embed_dim)
        self.experts = ExpertBank(self.flat_dim, c.num_experts, c.expert_dims, c.dropout)
        self.scenario_embedding = nn.Embedding(schema.num_scenarios, c.scenario_dim)
        nn.init.normal_(self.scenario_embedding.weight, std=0.1)
        self.scenario_mlp = MLP(c.scenario_dim, (c.scenario_dim,))
        d = self.experts.out_dim
        self.tasks = nn.ModuleList(
            MetaTask(d, c.scenario_dim, c.attention_dim, c.meta_layers, k) for k in output_dims(schema)
        )

    def _run(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        scenario = batch["scenario"]
        experts = self.experts(self.embedding(batch).flatten(1))
        table = self.scenario_mlp(self.scenario_embedding.weight)  # [S, scenario_dim]: every scenario once
        raw: list[torch.Tensor] = []
        info: dict[str, torch.Tensor] = {}
        for name, task in zip(self.task_names, self.tasks, strict=True):
            out, w = task(experts, scenario, table)
            raw.append(out)
            info[f"gates/level0/task:{name}"] = w
        return compose_outputs(self.schema, raw, self.config.funnel), info

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[0]

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``gates/level0/task:{name}``: ``[B, n_experts]`` meta-attention weights."""
        return self._run(batch)[1]
