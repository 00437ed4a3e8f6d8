"""HiNet (Zhou et al., "HiNet: Novel Multi-Scenario & Multi-Task Learning with Hierarchical Information
Extraction", ICDE 2023, arXiv 2303.06095).

Two extraction layers:

* scenario extraction: shared experts, the row's own scenario-specific experts, and a scenario-aware
  attentive network (SAN) that borrows from *other* scenarios — attention weights computed from the
  scenario embeddings over the other scenarios' expert representations. A scenario-conditioned gate
  fuses (shared experts, own-scenario representation, SAN representation) into the scenario representation;
* task extraction: a CGC layer (shared + task-specific experts, one gate per task) on that representation,
  then a tower per task.

SAN needs every scenario's experts on every row — that is the method, not an implementation shortcut —
so :meth:`HiNet.flops_per_sample` counts all of them. With a single scenario there is nothing to borrow
from and SAN is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import CGCLayer, ExpertBank, FieldEmbedding, Gate, ScenarioExpertBank, TaskHeads, mix
from msmtrec.models.base import ModelConfig, MultiTaskModel, Param, estimate_flops, register, require


@dataclass
class HiNetConfig(ModelConfig):
    shared_experts: int = 2
    """Scenario-shared experts in the scenario extraction layer."""
    scenario_experts: int = 1
    """Experts per scenario in the scenario extraction layer."""
    expert_dims: tuple[int, ...] = (64,)
    """Hidden sizes of the scenario extraction experts."""
    scenario_dim: int = 8
    """Size of the scenario embedding (gate context and SAN queries/keys)."""
    san_dim: int = 8
    """Query/key size of the scenario-aware attention."""
    task_shared_experts: int = 1
    """Shared experts in the task extraction (CGC) layer."""
    task_experts: int = 1
    """Task-specific experts per task in the task extraction layer."""
    task_expert_dims: tuple[int, ...] = (32,)
    """Hidden sizes of the task extraction experts."""


@register("hinet")
class HiNet(MultiTaskModel):
    Config = HiNetConfig
    scenarios_interact = True  # the SAN attends over every scenario's expert

    @classmethod
    def search_space(cls) -> dict[str, Param]:
        """The default space plus this model's own sizes (see :meth:`MultiTaskModel.search_space`)."""
        return {
            **super().search_space(),
            "model.shared_experts": Param.choice(1, 2, 3),
            "model.scenario_experts": Param.choice(1, 2),
            "model.expert_dims": Param.choice((64,), (128,), (128, 64)),
            "model.task_experts": Param.choice(1, 2),
            "model.task_expert_dims": Param.choice((32,), (64,)),
        }

    def __init__(self, schema: Schema, config: HiNetConfig) -> None:
        super().__init__(schema, config)
        c = config
        require(c.shared_experts >= 1 and c.scenario_experts >= 1, "hinet: need shared and scenario experts")
        require(c.task_shared_experts + c.task_experts >= 1, "hinet: need task extraction experts")
        require(len(c.expert_dims) > 0 and len(c.task_expert_dims) > 0, "hinet: expert dims must be set")
        n_scen = schema.num_scenarios
        in_dim = self.flat_dim
        self.embedding = FieldEmbedding(schema, c.embed_dim)
        self.scenario_embedding = nn.Embedding(n_scen, c.scenario_dim)
        nn.init.normal_(self.scenario_embedding.weight, std=0.1)
        self.shared_experts = ExpertBank(in_dim, c.shared_experts, c.expert_dims, c.dropout)
        self.scenario_experts = ScenarioExpertBank(in_dim, c.scenario_experts, c.expert_dims, n_scen, c.dropout)
        self.specific_gate = Gate(in_dim + c.scenario_dim, c.scenario_experts)
        self.use_san = n_scen > 1
        if self.use_san:
            self.san_query = nn.Linear(c.scenario_dim, c.san_dim, bias=False)
            self.san_key = nn.Linear(c.scenario_dim, c.san_dim, bias=False)
        self.scenario_gate = Gate(in_dim + c.scenario_dim, c.shared_experts + 1 + int(self.use_san))
        d = self.shared_experts.out_dim
        self.task_layer = CGCLayer(
            d, self.task_names, c.task_shared_experts, c.task_experts, c.task_expert_dims, c.dropout
        )
        self.heads = TaskHeads(schema, self.task_layer.out_dim, c.tower_dims, c.dropout, c.funnel)

    def _run(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        scenario = batch["scenario"]
        x = self.embedding(batch).flatten(1)
        ctx = self.scenario_embedding(scenario)
        gate_in = torch.cat([x, ctx], dim=1)
        info: dict[str, torch.Tensor] = {}
        shared = self.shared_experts(x)  # [B, n_shared, d]
        if self.use_san:
            every = self.scenario_experts.forward_all(x)  # [B, S, n, d]
            idx = scenario.reshape(-1, 1, 1, 1).expand(-1, 1, every.shape[2], every.shape[3])
            own = every.gather(1, idx).squeeze(1)  # [B, n, d]
            keys = self.san_key(self.scenario_embedding.weight)  # [S, k]
            scores = self.san_query(ctx) @ keys.t() / math.sqrt(keys.shape[1])  # [B, S]
            is_self = F.one_hot(scenario, self.schema.num_scenarios).bool()
            san_w = scores.masked_fill(is_self, float("-inf")).softmax(dim=-1)
            san = torch.einsum("bs,bsd->bd", san_w, every.mean(dim=2))
            info["gates/level0/san"] = san_w
        else:
            own = self.scenario_experts(x, scenario)
        specific_w = self.specific_gate(gate_in)
        parts = [shared, mix(specific_w, own).unsqueeze(1)]
        if self.use_san:
            parts.append(san.unsqueeze(1))
        scen_w = self.scenario_gate(gate_in)
        scen_rep = mix(scen_w, torch.cat(parts, dim=1))
        info["gates/level0/scenario"] = scen_w
        reps, _, gates = self.task_layer([scen_rep] * len(self.task_names), scen_rep)
        info.update({f"gates/level1/{k}": v for k, v in gates.items()})
        return self.heads(reps), info

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[0]

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Also ``gates/level0/san``: ``[B, n_scenarios]`` attention over other scenarios (0 on its own)."""
        return self._run(batch)[1]

    def flops_per_sample(self) -> int:
        """SAN runs every scenario's experts on every row, so they count ``n_scenarios`` times."""
        extra = estimate_flops(self.scenario_experts) * (self.schema.num_scenarios - 1) if self.use_san else 0
        return estimate_flops(self) + extra
