"""PEPNet (Chang et al., "PEPNet: Parameter and Embedding Personalized Network for Infusing with
Personalized Prior Information", KDD 2023).

* EPNet: a gate NU on ``scenario embedding ⊕ stop_gradient(field embeddings)`` produces one scale in
  (0, 2) per field, personalising the *embeddings* to the scenario;
* PPNet: per-layer gate NUs on ``prior ⊕ stop_gradient(EPNet output)`` produce, for every task, a scale
  for each hidden unit of that task's tower, personalising the *parameters* of every tower.

The stop-gradients are the paper's: the gates may read the embeddings but must not reshape them to suit
the gating (which would let the gate and the towers pull the shared embeddings in opposite directions).
Our schema has no separate persona fields, so the scenario embedding is the prior for both nets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import FieldEmbedding, GateNU, compose_outputs, output_dims, task_output
from msmtrec.models.base import ModelConfig, MultiTaskModel, Param, register, require


@dataclass
class PEPNetConfig(ModelConfig):
    tower_dims: tuple[int, ...] = (64, 32)
    """Hidden sizes of each task tower; each hidden layer is scaled by a PPNet gate."""
    scenario_dim: int = 8
    """Size of the scenario (prior) embedding fed to the gates."""
    gate_hidden: int = 32
    """Hidden size of every gate NU."""
    gamma: float = 2.0
    """Gate NU output range (0, gamma)."""


@register("pepnet")
class PEPNet(MultiTaskModel):
    Config = PEPNetConfig
    personalise_embeddings: ClassVar[bool] = True
    """EPNet on: per-field embedding scales (the ``epnet`` model keeps only this half)."""
    personalise_parameters: ClassVar[bool] = True
    """PPNet on: per-task hidden-unit scales (the ``ppnet`` model keeps only this half)."""

    @classmethod
    def search_space(cls) -> dict[str, Param]:
        """The default space plus this model's own sizes (see :meth:`MultiTaskModel.search_space`)."""
        return {
            **super().search_space(),
            "model.tower_dims": Param.choice((64, 32), (128, 64), (256, 128)),
            "model.gate_hidden": Param.choice(16, 32, 64),
        }

    def __init__(self, schema: Schema, config: PEPNetConfig) -> None:
        super().__init__(schema, config)
        require(len(config.tower_dims) > 0, "pepnet: tower_dims must not be empty")
        c = config
        n_tasks, n_fields = len(self.task_names), schema.num_fields
        in_dim = n_fields * c.embed_dim
        self.embedding = FieldEmbedding(schema, c.embed_dim)
        self.scenario_embedding = nn.Embedding(schema.num_scenarios, c.scenario_dim)
        nn.init.normal_(self.scenario_embedding.weight, std=0.1)
        self.epnet = (
            GateNU(c.scenario_dim + in_dim, n_fields, c.gate_hidden, c.gamma) if self.personalise_embeddings else None
        )
        self.ppnet = (
            nn.ModuleList(GateNU(c.scenario_dim + in_dim, n_tasks * h, c.gate_hidden, c.gamma) for h in c.tower_dims)
            if self.personalise_parameters
            else None
        )
        sizes = [in_dim, *c.tower_dims]
        self.towers = nn.ModuleList(
            nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)) for _ in range(n_tasks)
        )
        self.outs = nn.ModuleList(nn.Linear(sizes[-1], k) for k in output_dims(schema))
        self.dropout = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()

    def _run(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        tokens = self.embedding(batch)
        prior = self.scenario_embedding(batch["scenario"])
        info: dict[str, torch.Tensor] = {}
        x0 = tokens.flatten(1)
        if self.epnet is not None:
            field_gate = self.epnet(torch.cat([prior, tokens.flatten(1).detach()], dim=1))  # [B, F]
            x0 = (tokens * field_gate.unsqueeze(-1)).flatten(1)
            info["epnet"] = field_gate
        gates = self._ppnet_gates(prior, x0)
        raw: list[torch.Tensor] = []
        for t, (layers, out) in enumerate(zip(self.towers, self.outs, strict=True)):
            h = x0
            for layer, gate in zip(layers, gates, strict=True):
                h = F.relu(layer(h))
                h = self.dropout(h * gate[:, t] if gate is not None else h)
            raw.append(task_output(out(h)))
        return compose_outputs(self.schema, raw, self.config.funnel), info

    def _ppnet_gates(self, prior: torch.Tensor, x0: torch.Tensor) -> list[torch.Tensor | None]:
        """Per tower layer ``[B, T, h]`` PPNet scales (``None`` per layer when PPNet is off)."""
        if self.ppnet is None:
            return [None] * len(self.config.tower_dims)
        pp_in = torch.cat([prior, x0.detach()], dim=1)
        return [g(pp_in).reshape(x0.shape[0], len(self.task_names), -1) for g in self.ppnet]

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch)[0]

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``epnet``: ``[B, F]`` per-field embedding scales in (0, gamma)."""
        return self._run(batch)[1]
