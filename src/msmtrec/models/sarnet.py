"""SAR-Net (Shen et al., "SAR-Net: A Scenario-Aware Ranking Network for Personalized Fair Recommendation in
Hundreds of Travel Scenarios", CIKM 2021, https://arxiv.org/abs/2110.06475).

* cross-scenario attention: the scenario representation queries the feature tokens (the paper attends over
  the user's behaviours in every scenario; our behaviour sequences are pooled into field tokens), so what a
  row's features say is read in the light of the scenario it is served in;
* scenario-specific linear transformation: the representation is scaled and shifted per scenario;
* a mixture of shared experts and the row's *own* scenario's experts (each row runs only its scenario's,
  :class:`~msmtrec.layers.ScenarioExpertBank`), mixed by gates on the scenario representation;
* a debias network: a small logit from the scenario representation alone, added to every task's logit,
  which absorbs the scenario's base rate so the experts model preferences rather than traffic.

Multi-task: one gate and one tower per task over the same experts (the paper has one output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import ExpertBank, FieldEmbedding, Gate, ScenarioExpertBank, TaskHeads, mix
from msmtrec.models.base import ModelConfig, MultiTaskModel, register, require


@dataclass
class SARNetConfig(ModelConfig):
    shared_experts: int = 2
    """Experts shared by every scenario."""
    scenario_experts: int = 1
    """Experts per scenario (a row runs only its own scenario's)."""
    expert_dims: tuple[int, ...] = (64,)
    """Hidden sizes of every expert MLP."""
    scenario_dim: int = 16
    """Size of the scenario representation (attention query, gate and debias input)."""


@register("sarnet")
class SARNet(MultiTaskModel):
    Config = SARNetConfig

    def __init__(self, schema: Schema, config: SARNetConfig) -> None:
        super().__init__(schema, config)
        c = config
        require(c.shared_experts >= 1 and c.scenario_experts >= 1, "sarnet: need shared and scenario experts")
        require(len(c.expert_dims) > 0, "sarnet: expert_dims must not be empty")
        n_scen = schema.num_scenarios
        in_dim = (schema.num_fields + 1) * c.embed_dim  # flattened tokens ⊕ the attended summary
        self.embedding = FieldEmbedding(schema, c.embed_dim)
        self.scenario_embedding = nn.Embedding(n_scen, c.scenario_dim)
        nn.init.normal_(self.scenario_embedding.weight, std=0.1)
        self.query = nn.Linear(c.scenario_dim, c.embed_dim, bias=False)
        self.key = nn.Linear(c.embed_dim, c.embed_dim, bias=False)
        self.scale = nn.Parameter(torch.ones(n_scen, in_dim))  # scenario-specific transformation
        self.shift = nn.Parameter(torch.zeros(n_scen, in_dim))
        self.shared = ExpertBank(in_dim, c.shared_experts, c.expert_dims, c.dropout)
        self.own = ScenarioExpertBank(in_dim, c.scenario_experts, c.expert_dims, n_scen, c.dropout)
        self.gates = nn.ModuleList(Gate(c.scenario_dim, c.shared_experts + c.scenario_experts) for _ in self.task_names)
        self.debias = nn.Linear(c.scenario_dim, len(self.task_names))
        self.heads = TaskHeads(schema, self.shared.out_dim, c.tower_dims, c.dropout, c.funnel)

    def _run(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        scenario = batch["scenario"]
        tokens = self.embedding(batch)  # [B, F, D]
        s = self.scenario_embedding(scenario)
        scores = torch.einsum("bd,bfd->bf", self.query(s), self.key(tokens)) / math.sqrt(tokens.shape[2])
        attention = scores.softmax(dim=1)
        summary = torch.einsum("bf,bfd->bd", attention, tokens)
        x = torch.cat([tokens.flatten(1), summary], dim=1)
        x = x * self.scale.index_select(0, scenario) + self.shift.index_select(0, scenario)
        experts = torch.cat([self.shared(x), self.own(x, scenario)], dim=1)
        info: dict[str, torch.Tensor] = {"scenario_attention": attention}
        reps: list[torch.Tensor] = []
        for name, gate in zip(self.task_names, self.gates, strict=True):
            w = gate(s)
            reps.append(mix(w, experts))
            info[f"gates/level0/task:{name}"] = w
        return self.heads(reps, self.debias(s)), info

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[0]

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``scenario_attention``: ``[B, F]`` weights of the scenario query over the field tokens;
        ``gates/level0/task:{name}``: ``[B, shared + scenario experts]``."""
        return self._run(batch)[1]
