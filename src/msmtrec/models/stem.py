"""STEM (Su et al., "STEM: Unleashing the Power of Embeddings for Multi-task Recommendation", AAAI 2024,
https://arxiv.org/abs/2308.13537): the STEM-Net architecture.

Tasks whose samples disagree (a user who clicks but never buys) pull a *shared* embedding in opposite
directions. STEM gives every task its own embedding tables besides the shared ones; each embedding set
feeds its own experts, and every task's gate mixes the shared experts with *all* tasks' experts. The gate
follows the paper's *All Forward Task-specific Backward* rule: task ``t`` reads every expert in the forward
pass, but its gradient only reaches the shared experts and its own (other tasks' experts are
stop-gradiented), so each task-specific embedding is trained by its task alone. Gates read the shared and the
task's embeddings. The scenario enters as one more embedded field of every embedding set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import ExpertBank, FieldEmbedding, Gate, TaskHeads, mix
from msmtrec.layers.context import ScenarioField
from msmtrec.models.base import ModelConfig, MultiTaskModel, register, require


@dataclass
class STEMConfig(ModelConfig):
    shared_experts: int = 1
    """Experts on the shared embeddings."""
    task_experts: int = 1
    """Experts on each task's own embeddings."""
    expert_dims: tuple[int, ...] = (64,)
    """Hidden sizes of every expert MLP."""


@register("stem")
class STEM(MultiTaskModel):
    Config = STEMConfig

    def __init__(self, schema: Schema, config: STEMConfig) -> None:
        super().__init__(schema, config)
        c = config
        require(c.shared_experts >= 1 and c.task_experts >= 1, "stem: need shared_experts >= 1, task_experts >= 1")
        require(len(c.expert_dims) > 0, "stem: expert_dims must not be empty")
        n_tasks = len(self.task_names)
        # embedding set 0 is shared, set 1 + t belongs to task t
        self.embeddings = nn.ModuleList(FieldEmbedding(schema, c.embed_dim) for _ in range(n_tasks + 1))
        self.scenario_fields = nn.ModuleList(
            ScenarioField(schema.num_scenarios, c.embed_dim) for _ in range(n_tasks + 1)
        )
        in_dim = (schema.num_fields + 1) * c.embed_dim
        self.shared_bank = ExpertBank(in_dim, c.shared_experts, c.expert_dims, c.dropout)
        self.task_banks = nn.ModuleList(
            ExpertBank(in_dim, c.task_experts, c.expert_dims, c.dropout) for _ in range(n_tasks)
        )
        self.gates = nn.ModuleList(
            Gate(2 * in_dim, c.shared_experts + n_tasks * c.task_experts) for _ in range(n_tasks)
        )
        self.heads = TaskHeads(schema, int(c.expert_dims[-1]), c.tower_dims, c.dropout, c.funnel)

    def _run(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        scenario = batch["scenario"]
        inputs = [
            field(emb(batch), scenario).flatten(1)
            for emb, field in zip(self.embeddings, self.scenario_fields, strict=True)
        ]
        shared = self.shared_bank(inputs[0])
        own = [bank(x) for bank, x in zip(self.task_banks, inputs[1:], strict=True)]
        frozen = [e.detach() for e in own]
        reps: list[torch.Tensor] = []
        info: dict[str, torch.Tensor] = {}
        for t, (gate, name) in enumerate(zip(self.gates, self.task_names, strict=True)):
            experts = torch.cat([shared, *(own[j] if j == t else frozen[j] for j in range(len(own)))], dim=1)
            w = gate(torch.cat([inputs[0], inputs[1 + t]], dim=1))
            reps.append(mix(w, experts))
            info[f"gates/level0/task:{name}"] = w
        return self.heads(reps), info

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[0]

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``gates/level0/task:{name}``: ``[B, shared + n_tasks · task_experts]`` weights (shared experts first,
        then every task's experts in task order)."""
        return self._run(batch)[1]
