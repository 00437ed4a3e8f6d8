"""MetaHeac (Zhu et al., "Learning to Expand Audience via Meta Hybrid Experts and Critics for
Recommendation and Advertising", KDD 2021, https://arxiv.org/abs/2105.14446).

*Hybrid experts*: experts shared by all audience-expansion tasks, mixed by a gate that reads the task's
embedding, so each task picks its own blend of common knowledge. *Hybrid critics*: several critic towers
score that representation and a second gate on the task embedding weighs their probabilities,
``ŷ = Σ_k w_k σ(c_k)``. The paper's "task" (one campaign's audience) is our *scenario*: both gates read a
learnt scenario embedding, so each scenario has its own expert and critic blend. Our several prediction
tasks each get their own expert gate and critic set (MMoE-style), and the mixture of critic probabilities
is returned as an exact logit, ``log Σ w σ(c) − log Σ w σ(−c)`` (other kinds mix their outputs linearly). The paper's
meta-learning outer loop over campaigns is a training procedure, not part of the network; here the model
trains jointly like every model of the zoo.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import ExpertBank, FieldEmbedding, Gate, compose_outputs, mix, output_dims, task_output
from msmtrec.models.base import ModelConfig, MultiTaskModel, register, require
from msmtrec.tasks import kind_of


@dataclass
class MetaHeacConfig(ModelConfig):
    num_experts: int = 4
    """Hybrid experts, shared by every scenario and task."""
    expert_dims: tuple[int, ...] = (64,)
    """Hidden sizes of every expert MLP."""
    num_critics: int = 3
    """Critic towers per task."""
    scenario_dim: int = 8
    """Size of the scenario (the paper's task) embedding read by both gates."""


@register("metaheac")
class MetaHeac(MultiTaskModel):
    Config = MetaHeacConfig

    def __init__(self, schema: Schema, config: MetaHeacConfig) -> None:
        super().__init__(schema, config)
        c = config
        require(c.num_experts >= 1 and c.num_critics >= 1, "metaheac: need num_experts >= 1 and num_critics >= 1")
        require(len(c.expert_dims) > 0 and len(c.tower_dims) > 0, "metaheac: expert_dims and tower_dims must be set")
        n_tasks = len(self.task_names)
        self.embedding = FieldEmbedding(schema, c.embed_dim)
        self.scenario_embedding = nn.Embedding(schema.num_scenarios, c.scenario_dim)
        nn.init.normal_(self.scenario_embedding.weight, std=0.1)
        self.experts = ExpertBank(self.flat_dim, c.num_experts, c.expert_dims, c.dropout)
        self.expert_gates = nn.ModuleList(Gate(c.scenario_dim, c.num_experts) for _ in range(n_tasks))
        self.critics = nn.ModuleList(
            ExpertBank(self.experts.out_dim, c.num_critics, c.tower_dims, c.dropout) for _ in range(n_tasks)
        )
        h = c.tower_dims[-1]
        self.critic_out = nn.ParameterList(
            nn.Parameter(torch.randn(c.num_critics, h, k) * h**-0.5) for k in output_dims(schema)
        )
        self.critic_bias = nn.ParameterList(nn.Parameter(torch.zeros(c.num_critics, k)) for k in output_dims(schema))
        self.critic_gates = nn.ModuleList(Gate(c.scenario_dim, c.num_critics) for _ in range(n_tasks))
        self.binary = [kind_of(t).probability and kind_of(t).output_dim == 1 for t in schema.tasks]

    def _run(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        experts = self.experts(self.embedding(batch).flatten(1))
        s = self.scenario_embedding(batch["scenario"])
        raw: list[torch.Tensor] = []
        info: dict[str, torch.Tensor] = {}
        for t, name in enumerate(self.task_names):
            expert_w = self.expert_gates[t](s)
            h = self.critics[t](mix(expert_w, experts))  # [B, K, h]
            scores = torch.einsum("bkh,khd->bkd", h, self.critic_out[t]) + self.critic_bias[t]  # [B, K, out]
            critic_w = self.critic_gates[t](s)
            if self.binary[t]:
                raw.append(_mix_probabilities(critic_w, scores[..., 0]))
            else:  # values (and a multi-number kind's outputs) are mixed linearly
                raw.append(task_output((critic_w.unsqueeze(-1) * scores).sum(1)))
            info[f"gates/level0/task:{name}"] = expert_w
            info[f"gates/level1/task:{name}"] = critic_w
        return compose_outputs(self.schema, raw, self.config.funnel), info

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[0]

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``gates/level0/task:{name}``: expert gate ``[B, n_experts]``; ``level1``: critic gate ``[B, K]``."""
        return self._run(batch)[1]


def _mix_probabilities(weights: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``logit(Σ_k w_k σ(c_k))`` computed in log space: exact and finite for any logits."""
    log_w = torch.log(weights.clamp(min=1e-12))
    log_p = torch.logsumexp(log_w + F.logsigmoid(logits), dim=1)
    log_q = torch.logsumexp(log_w + F.logsigmoid(-logits), dim=1)
    return log_p - log_q
