"""AdaTT (Li et al., "AdaTT: Adaptive Task-to-Task Fusion Network for Multitask Learning in
Recommendations", KDD 2023, https://arxiv.org/abs/2304.04959; the AdaTT-sp variant with shared experts).

Every task owns a group of experts at every fusion level. A task's *fusion unit* combines two parts:
a gate over **all** tasks' experts and the shared experts (adaptive task-to-task fusion, so a task learns
how much to borrow from each other task), plus a residual linear combination of its *own* experts with
learnt weights (so the task-specific signal cannot be washed out by the gate). The shared experts of a
non-final level get their own gate over every expert, and each level's outputs are the next level's inputs,
task by task, with the shared path updated across levels. The scenario enters as one more embedded field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import ExpertBank, FieldEmbedding, Gate, TaskHeads, mix
from msmtrec.layers.context import ScenarioField
from msmtrec.models.base import ModelConfig, MultiTaskModel, register, require


@dataclass
class AdaTTConfig(ModelConfig):
    levels: int = 2
    """Number of fusion levels."""
    task_experts: int = 2
    """Experts per task per level."""
    shared_experts: int = 1
    """Shared experts per level (0: plain AdaTT without shared experts)."""
    expert_dims: tuple[int, ...] = (64,)
    """Hidden sizes of every expert MLP."""


class FusionLevel(nn.Module):
    """One AdaTT level: per-task expert groups, per-task fusion units, an optional shared path."""

    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        task_experts: int,
        shared_experts: int,
        dims: Sequence[int],
        dropout: float,
        final: bool,
    ) -> None:
        super().__init__()
        total = n_tasks * task_experts + shared_experts
        self.task_banks = nn.ModuleList(ExpertBank(in_dim, task_experts, dims, dropout) for _ in range(n_tasks))
        self.shared_bank = ExpertBank(in_dim, shared_experts, dims, dropout) if shared_experts else None
        self.gates = nn.ModuleList(Gate(in_dim, total) for _ in range(n_tasks))
        self.native = nn.Parameter(torch.ones(n_tasks, task_experts))  # residual weights of each task's own experts
        self.shared_gate = Gate(in_dim, total) if shared_experts and not final else None
        self.out_dim = int(dims[-1])

    def forward(
        self, task_inputs: Sequence[torch.Tensor], shared_input: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
        own = [bank(x) for bank, x in zip(self.task_banks, task_inputs, strict=True)]
        every = torch.cat([*own, *([self.shared_bank(shared_input)] if self.shared_bank is not None else [])], dim=1)
        outputs: list[torch.Tensor] = []
        gates: dict[str, torch.Tensor] = {}
        for t, (gate, x) in enumerate(zip(self.gates, task_inputs, strict=True)):
            w = gate(x)
            native = self.native[t].unsqueeze(0).expand(x.shape[0], -1)
            outputs.append(mix(w, every) + mix(native, own[t]))
            gates[str(t)] = w
        shared = shared_input
        if self.shared_gate is not None:
            w = self.shared_gate(shared_input)
            shared = mix(w, every)
            gates["shared"] = w
        return outputs, shared, gates


@register("adatt")
class AdaTT(MultiTaskModel):
    Config = AdaTTConfig

    def __init__(self, schema: Schema, config: AdaTTConfig) -> None:
        super().__init__(schema, config)
        c = config
        require(c.levels >= 1 and c.task_experts >= 1, "adatt: need levels >= 1 and task_experts >= 1")
        require(c.shared_experts >= 0 and len(c.expert_dims) > 0, "adatt: shared_experts >= 0 and expert_dims set")
        self.embedding = FieldEmbedding(schema, c.embed_dim)
        self.scenario_field = ScenarioField(schema.num_scenarios, c.embed_dim)
        in_dim = (schema.num_fields + 1) * c.embed_dim
        n_tasks = len(self.task_names)
        self.levels = nn.ModuleList(
            FusionLevel(
                in_dim if lvl == 0 else int(c.expert_dims[-1]),
                n_tasks,
                c.task_experts,
                c.shared_experts,
                c.expert_dims,
                c.dropout,
                final=lvl == c.levels - 1,
            )
            for lvl in range(c.levels)
        )
        self.heads = TaskHeads(schema, int(c.expert_dims[-1]), c.tower_dims, c.dropout, c.funnel)

    def _run(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        x = self.scenario_field(self.embedding(batch), batch["scenario"]).flatten(1)
        task_inputs, shared = [x] * len(self.task_names), x
        info: dict[str, torch.Tensor] = {}
        for lvl, level in enumerate(self.levels):
            task_inputs, shared, gates = level(task_inputs, shared)
            for key, w in gates.items():
                who = "shared" if key == "shared" else f"task:{self.task_names[int(key)]}"
                info[f"gates/level{lvl}/{who}"] = w
        return self.heads(task_inputs), info

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[0]

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``gates/level{l}/task:{name}``: ``[B, n_tasks · task_experts + shared_experts]`` fusion weights over
        every task's experts (task order) then the shared ones; ``gates/level{l}/shared`` on non-final levels."""
        return self._run(batch)[1]
