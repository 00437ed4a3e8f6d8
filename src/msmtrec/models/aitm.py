"""AITM (Xi et al., "Modeling the Sequential Dependence among Audience Multi-step Conversions with
Multi-task Learning in Targeted Display Advertising", KDD 2021, https://arxiv.org/abs/2105.08489).

Every task has its own tower over the shared embeddings, giving ``q_t``. Along the conversion path
(impression → click → … → purchase) the *adaptive information transfer* (AIT) module lets a step borrow from
the step before it: the previous step's AIT output ``z_{t-1}`` is mapped to a transferred vector
``p_{t-1}`` by a small MLP, and ``z_t = Σ_{u ∈ {p_{t-1}, q_t}} w_u h1(u)`` with
``w_u = softmax_u(<h2(u), h3(u)> / √k)``; the first step has ``z_1 = q_1``. A *behavioural expectation
calibrator* adds ``α · Σ_t max(ŷ_t − ŷ_{t−1}, 0)`` to the loss so a later step is not predicted likelier than
the step it needs (returned by :meth:`regularization_loss`).

Mapping to our contract: a task's previous step is the task it is declared ``inside`` (its funnel parent);
a task with no parent continues from the parentless task declared before it, since AITM models one sequence
of steps.
Outputs are the unconditional probabilities the paper predicts (``funnel=False`` by default; the calibrator
then keeps the funnel ordered softly). The scenario enters as one more embedded field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import MLP, FieldEmbedding, compose_outputs, output_dims, task_output
from msmtrec.layers.context import ScenarioField
from msmtrec.models.base import ModelConfig, MultiTaskModel, caches_regularizer, register, require
from msmtrec.tasks import kind_of


@dataclass
class AITMConfig(ModelConfig):
    tower_dims: tuple[int, ...] = (64, 32)
    """Hidden sizes of each task's tower; the last one is the size of ``q_t``, ``p_t`` and ``z_t``."""
    calibrator_weight: float = 0.6
    """α of the behavioural expectation calibrator (the paper's value); 0 turns it off."""
    funnel: bool = False
    """Compose funnel tasks ESMM-style instead of predicting each step directly (the paper: directly)."""


class AdaptiveTransfer(nn.Module):
    """AIT: attention over the transferred ``p`` and the task's own ``q`` → ``z`` and the ``[B, 2]`` weights."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.value, self.query, self.key = (nn.Linear(dim, dim) for _ in range(3))
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.stack([p, q], dim=1)  # [B, 2, d]
        w = ((self.query(u) * self.key(u)).sum(-1) * self.scale).softmax(dim=1)  # [B, 2]
        return (w.unsqueeze(-1) * self.value(u)).sum(1), w


@register("aitm")
class AITM(MultiTaskModel):
    Config = AITMConfig

    def __init__(self, schema: Schema, config: AITMConfig) -> None:
        super().__init__(schema, config)
        require(len(config.tower_dims) > 0, "aitm: tower_dims must not be empty")
        require(config.calibrator_weight >= 0, "aitm: calibrator_weight must be >= 0")
        d = config.tower_dims[-1]
        n_tasks = len(self.task_names)
        self.embedding = FieldEmbedding(schema, config.embed_dim)
        self.scenario_field = ScenarioField(schema.num_scenarios, config.embed_dim)
        in_dim = (schema.num_fields + 1) * config.embed_dim
        self.towers = nn.ModuleList(MLP(in_dim, config.tower_dims, config.dropout) for _ in range(n_tasks))
        self.previous = self._previous_steps(schema)
        self.transfer = nn.ModuleDict({str(t): MLP(d, (d,)) for t in self.previous})  # p_{prev} = g(z_prev)
        self.ait = nn.ModuleDict({str(t): AdaptiveTransfer(d) for t in self.previous})
        self.outs = nn.ModuleList(nn.Linear(d, k) for k in output_dims(schema))
        self.binary = [kind_of(t).probability and kind_of(t).output_dim == 1 for t in schema.tasks]
        self._calibration: torch.Tensor | None = None

    @staticmethod
    def _previous_steps(schema: Schema) -> dict[int, int]:
        """Task index → the index of the step it follows: its funnel parent, or for a task without one the
        parentless task declared before it (roots chain among roots, so the steps never form a loop)."""
        names = schema.task_names
        previous: dict[int, int] = {}
        last_root: int | None = None
        for i, t in enumerate(schema.tasks):
            if t.inside:
                previous[i] = names.index(t.inside)
                continue
            if last_root is not None:
                previous[i] = last_root
            last_root = i
        return previous

    def _run(self, batch: Batch) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        x = self.scenario_field(self.embedding(batch), batch["scenario"]).flatten(1)
        q = [tower(x) for tower in self.towers]
        z: dict[int, torch.Tensor] = {}
        info: dict[str, torch.Tensor] = {}

        def step(i: int) -> torch.Tensor:  # z_i, computing the steps it depends on first
            if i not in z:
                if i in self.previous:
                    p = self.transfer[str(i)](step(self.previous[i]))
                    z[i], w = self.ait[str(i)](p, q[i])
                    info[f"gates/level1/task:{self.task_names[i]}"] = w
                else:
                    z[i] = q[i]
            return z[i]

        raw = [task_output(out(step(i))) for i, out in enumerate(self.outs)]
        return raw, info

    def _calibrator(self, raw: list[torch.Tensor]) -> torch.Tensor:
        """α · mean over rows of Σ max(ŷ_t − ŷ_prev, 0) over binary (step, previous step) pairs (output logits)."""
        terms = [
            F.relu(torch.sigmoid(raw[t]) - torch.sigmoid(raw[prev])).mean()
            for t, prev in self.previous.items()
            if self.binary[t] and self.binary[prev]
        ]
        return self.config.calibrator_weight * torch.stack(terms).sum() if terms else raw[0].new_zeros(())

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = compose_outputs(self.schema, self._run(batch)[0], self.config.funnel)
        self._calibration = self._calibrator([out[n] for n in self.task_names]) if caches_regularizer() else None
        return out

    def regularization_loss(self) -> torch.Tensor:
        """The behavioural expectation calibrator of the last forward pass (0 before any)."""
        return super().regularization_loss() if self._calibration is None else self._calibration

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``gates/level1/task:{name}``: ``[B, 2]`` AIT weights of (transferred from the previous step, own)."""
        return self._run(batch)[1]
