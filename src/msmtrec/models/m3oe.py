"""M3oE (Zhang et al., "M3oE: Multi-Domain Multi-Task Mixture-of-Experts Recommendation Framework",
SIGIR 2024).

Three mixture-of-experts modules learn common (shared), domain-aspect and task-aspect preferences in a
disentangled way; their representations are fused per (domain, task) with learnable weights (the paper
searches the fusion weights with AutoML; here they are a softmaxed ``[n_domains, n_tasks, 3]`` table learnt
by gradient descent, which is the continuous relaxation such a search optimises). One level of the grouped
extraction layer provides the three gated views; domain experts run only on their own domain's rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import BalancedMixing, FieldEmbedding, GroupedExtractionLayer, TaskHeads
from msmtrec.models.base import ModelConfig, MultiTaskModel, Param, register, require


@dataclass
class M3oEConfig(ModelConfig):
    shared_experts: int = 2
    """Experts of the shared (common) module."""
    domain_experts: int = 1
    """Experts per domain (scenario) in the domain module (0 = off)."""
    task_experts: int = 1
    """Experts per task in the task module (0 = off)."""
    expert_dims: tuple[int, ...] = (64,)
    """Hidden sizes of every expert MLP."""


@register("m3oe")
class M3oE(MultiTaskModel):
    Config = M3oEConfig

    @classmethod
    def search_space(cls) -> dict[str, Param]:
        """The default space plus this model's own sizes (see :meth:`MultiTaskModel.search_space`)."""
        return {
            **super().search_space(),
            "model.shared_experts": Param.choice(1, 2, 3, 4),
            "model.domain_experts": Param.choice(1, 2),
            "model.task_experts": Param.choice(1, 2),
            "model.expert_dims": Param.choice((64,), (96,), (128,), (128, 64)),
        }

    def __init__(self, schema: Schema, config: M3oEConfig) -> None:
        super().__init__(schema, config)
        require(config.shared_experts >= 1, "m3oe: shared_experts must be >= 1")
        require(config.domain_experts >= 0 and config.task_experts >= 0, "m3oe: expert counts must be >= 0")
        require(len(config.expert_dims) > 0, "m3oe: expert_dims must not be empty")
        self.embedding = FieldEmbedding(schema, config.embed_dim)
        self.experts = GroupedExtractionLayer(
            self.flat_dim,
            0,
            self.task_names,
            schema.num_scenarios,
            config.shared_experts,
            config.domain_experts,
            config.task_experts,
            config.expert_dims,
            config.dropout,
            final=True,
        )
        self.fusion = BalancedMixing(
            schema.num_scenarios,
            len(self.task_names),
            present=(True, config.domain_experts > 0, config.task_experts > 0),
            mode="learned",
        )
        self.heads = TaskHeads(schema, self.experts.out_dim, config.tower_dims, config.dropout, config.funnel)

    def _run(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        scenario = batch["scenario"]
        x = self.embedding(batch).flatten(1)
        fusion = [self.fusion(scenario, t) for t in range(len(self.task_names))]
        out = self.experts([x] * len(self.task_names), x, x, scenario, None, fusion)
        info = {f"gates/level0/{k}": v for k, v in out.gates.items()}
        info.update({f"mixing/{name}": w for name, w in zip(self.task_names, fusion, strict=True)})
        return self.heads(out.task), info

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[0]

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[1]
