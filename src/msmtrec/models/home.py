"""HoME (Wang et al., "HoME: Hierarchy of Multi-Gate Experts for Multi-Task Learning at Kuaishou",
2024, https://arxiv.org/abs/2408.05430).

Three fixes to the MMoE family, each a part of this module:

* *expert normalisation & Swish* against expert collapse: every expert is ``Linear → normalisation →
  Swish``, so all experts emit outputs of one scale and few exact zeros, and gates can weigh them fairly;
* *hierarchy mask* against expert degradation: a first (meta) level has global experts and experts per
  *task category*; its category outputs feed a second level of global, category and task experts, so shared
  experts are shared by related tasks rather than captured by one;
* *feature gate* and *self gate* against underfitting: each first-level expert reads its own privatised
  input ``x ⊙ 2σ(x A_e B_e)`` (a LoRA-sized gate), and each task's output adds its category's first-level
  output through a sigmoid self gate (a gated residual across the hierarchy).

Mapping to our contract: a task's category is its funnel root (tasks declared ``inside`` one another form one
category; every other task is its own). The experts' normalisation is partitioned by scenario (STAR's PN,
per-scenario statistics) instead of whole-batch batch norm, so a large scenario does not set the statistics
a small one is normalised with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import FieldEmbedding, Gate, PartitionedNorm, TaskHeads, mix
from msmtrec.models.base import ModelConfig, MultiTaskModel, register, require


@dataclass
class HoMEConfig(ModelConfig):
    expert_dim: int = 64
    """Output size of every expert (``Linear → norm → Swish``)."""
    global_experts: int = 1
    """Global shared experts per level."""
    category_experts: int = 1
    """Experts per task category per level."""
    task_experts: int = 1
    """Task-specific experts (second level)."""
    gate_rank: int = 8
    """Rank of the per-expert feature gate (0: no feature gate)."""


class NormExperts(nn.Module):
    """``n`` one-layer experts ``Swish(PN(x W_e + b_e))`` over a shared ``[B, in]`` or per-expert ``[B, n, in]``."""

    def __init__(self, in_dim: int, n: int, dim: int, num_scenarios: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(n, in_dim, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, dim).uniform_(-bound, bound))
        self.norm = PartitionedNorm(n * dim, num_scenarios)
        self.n, self.dim, self.in_dim = n, dim, in_dim

    def forward(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            h = (x @ self.weight.permute(1, 0, 2).reshape(self.in_dim, -1)).view(-1, self.n, self.dim)
        else:
            h = torch.einsum("bni,nio->bno", x, self.weight)
        h = self.norm((h + self.bias).flatten(1), scenario)
        return F.silu(h).view(-1, self.n, self.dim)

    def extra_flops(self) -> int:
        return 2 * self.n * self.in_dim * self.dim


class FeatureGate(nn.Module):
    """Per-expert privatised inputs ``x ⊙ 2σ(x A_e B_e)`` → ``[B, n, in]`` (B starts at 0: the gate starts at 1)."""

    def __init__(self, in_dim: int, n: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(in_dim, n * rank, bias=False)
        self.up = nn.Parameter(torch.zeros(n, rank, in_dim))
        self.n, self.rank = n, rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.down(x).view(-1, self.n, self.rank)
        return x.unsqueeze(1) * (2.0 * torch.sigmoid(torch.einsum("bnr,nri->bni", low, self.up)))

    def extra_flops(self) -> int:
        return 2 * self.n * self.rank * self.up.shape[2]


@register("home")
class HoME(MultiTaskModel):
    Config = HoMEConfig

    def __init__(self, schema: Schema, config: HoMEConfig) -> None:
        super().__init__(schema, config)
        c = config
        require(c.expert_dim >= 1 and c.global_experts >= 1, "home: need expert_dim >= 1 and global_experts >= 1")
        require(c.category_experts >= 1 and c.task_experts >= 1, "home: need category_experts, task_experts >= 1")
        require(c.gate_rank >= 0, "home: gate_rank must be >= 0")
        self.category = _categories(schema)
        n_cat, n_scen, d = max(self.category) + 1, schema.num_scenarios, c.expert_dim
        in_dim = self.flat_dim
        self.embedding = FieldEmbedding(schema, c.embed_dim)
        n_first = c.global_experts + n_cat * c.category_experts
        self.feature_gate = FeatureGate(in_dim, n_first, c.gate_rank) if c.gate_rank else None
        self.first = NormExperts(in_dim, n_first, d, n_scen)  # global experts first, then each category's
        self.first_category_gates = nn.ModuleList(
            Gate(in_dim, c.global_experts + c.category_experts) for _ in range(n_cat)
        )
        self.first_global_gate = Gate(in_dim, n_first)
        self.second_global = NormExperts(d, c.global_experts, d, n_scen)
        self.second_category = nn.ModuleList(NormExperts(d, c.category_experts, d, n_scen) for _ in range(n_cat))
        self.second_task = nn.ModuleList(NormExperts(d, c.task_experts, d, n_scen) for _ in self.task_names)
        n_second = c.global_experts + c.category_experts + c.task_experts
        self.task_gates = nn.ModuleList(Gate(d, n_second) for _ in self.task_names)
        self.self_gates = nn.ModuleList(nn.Linear(d, d) for _ in self.task_names)
        self.heads = TaskHeads(schema, d, c.tower_dims, c.dropout, c.funnel)

    def _first_level(self, x: torch.Tensor, scenario: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, dict]:
        c = self.config
        experts = self.first(self.feature_gate(x) if self.feature_gate is not None else x, scenario)
        shared = experts[:, : c.global_experts]
        per_cat = experts[:, c.global_experts :].split(c.category_experts, dim=1)
        info = {"gates/level0/shared": self.first_global_gate(x)}
        categories: list[torch.Tensor] = []
        for k, (gate, own) in enumerate(zip(self.first_category_gates, per_cat, strict=True)):
            w = gate(x)
            categories.append(mix(w, torch.cat([shared, own], dim=1)))
            info[f"gates/level0/category{k}"] = w
        return categories, mix(info["gates/level0/shared"], experts), info

    def _run(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        scenario = batch["scenario"]
        x = self.embedding(batch).flatten(1)
        categories, global_rep, info = self._first_level(x, scenario)
        shared = self.second_global(global_rep, scenario)
        cat_experts = [bank(m, scenario) for bank, m in zip(self.second_category, categories, strict=True)]
        reps: list[torch.Tensor] = []
        for t, name in enumerate(self.task_names):
            k = self.category[t]
            own = categories[k]
            experts = torch.cat([shared, cat_experts[k], self.second_task[t](own, scenario)], dim=1)
            w = self.task_gates[t](own)
            reps.append(mix(w, experts) + torch.sigmoid(self.self_gates[t](own)) * own)  # self gate
            info[f"gates/level1/task:{name}"] = w
        return self.heads(reps), info

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[0]

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``gates/level0/shared`` (over every first-level expert), ``gates/level0/category{k}`` (global +
        category ``k``'s experts) and ``gates/level1/task:{name}`` (global, category, task experts)."""
        return self._run(batch)[1]


def _categories(schema: Schema) -> Sequence[int]:
    """Task index → category index: tasks with the same funnel root share a category."""
    by_name = {t.name: t for t in schema.tasks}

    def root(name: str) -> str:
        parent = by_name[name].inside
        return root(parent) if parent else name

    roots = [root(t.name) for t in schema.tasks]
    order = list(dict.fromkeys(roots))
    return [order.index(r) for r in roots]
