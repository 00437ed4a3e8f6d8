"""The multi-task loss: one formula for every model; each task's term comes from its kind.

Every per-row term is :meth:`msmtrec.tasks.TaskKind.loss`: BCE-with-logits on the exposure-space logit
for binary tasks (for a funnel task the model already returns ``logit(p(parent) · p(child | parent))``,
so plain BCE on the funnel label *is* the ESMM loss), squared error for regression, BCE + log-normal NLL
for ``ziln``. Nothing here depends on which model is being trained.

Options:
* per-task weights (default ``Task.weight`` from the schema);
* uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018) with a learned log-variance ``s_t`` per task:
  ``exp(-s_t)·c_t·L_t + s_t/2`` with the kind's ``loss_scale`` ``c_t`` (1 for binary, 1/2 for regression);
* a positive-class weight and negative down-sampling per binary task (``positive_weight``,
  ``negative_keep``): a negative row's term is kept with probability ``r`` in training mode; the
  probabilities are re-calibrated exactly by the logit offset of :func:`sampling_logit_offset`;
* per-sample scenario weights against scenario imbalance, normalised to mean 1 over the training split so
  the loss keeps its scale and the learning rate keeps its meaning.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from msmtrec.data.schema import Schema
from msmtrec.tasks import kind_of


def scenario_weights(
    scenario: torch.Tensor | None, num_scenarios: int, mode: str, counts: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Per-scenario sample weights from the training split's scenario column (``None`` for ``none``).

    A streamed split passes its rows per scenario as ``counts`` instead of a column it never holds whole.

    ``inverse_frequency`` gives every scenario the same total weight; ``sqrt_inverse`` is the milder
    ``1/sqrt(count)``. Both are scaled so that the mean weight over the training rows is 1.
    """
    if mode == "none":
        return None
    if counts is None:
        if scenario is None:
            raise ValueError("scenario_weights needs the scenario column or the counts")
        counts = torch.bincount(scenario.long(), minlength=num_scenarios)
    counts = counts.double()
    present = counts > 0
    raw = torch.zeros(num_scenarios, dtype=torch.float64)
    if mode == "inverse_frequency":
        raw[present] = 1.0 / counts[present]
    elif mode == "sqrt_inverse":
        raw[present] = counts[present].rsqrt()
    else:
        raise ValueError(f"unknown scenario weighting {mode!r}")
    total = (raw * counts).sum()
    return (raw * counts.sum() / total).float() if total > 0 else torch.ones(num_scenarios)


class MultiTaskLoss(nn.Module):
    """``forward(outputs, labels, scenario) -> (total, per_task)``; ``per_task`` are the unweighted means."""

    def __init__(
        self,
        schema: Schema,
        task_weights: list[float],
        weighting: str = "fixed",
        scenario_weight: torch.Tensor | None = None,
        positive_weight: dict[str, float] | None = None,
        negative_keep: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.task_names = schema.task_names
        self.register_buffer("task_weight", torch.tensor(task_weights, dtype=torch.float32))
        self.kinds = [kind_of(t) for t in schema.tasks]
        self.register_buffer(
            "loss_scale", torch.tensor([k.loss_scale for k in self.kinds], dtype=torch.float32), persistent=False
        )
        pos = [float((positive_weight or {}).get(n, 1.0)) for n in self.task_names]
        keep = [float((negative_keep or {}).get(n, 1.0)) for n in self.task_names]
        # settings, not state: kept out of the state dict so checkpoints stay loadable whatever they are
        self.register_buffer("positive_weight", torch.tensor(pos) if any(w != 1.0 for w in pos) else None, False)
        self.register_buffer("negative_keep", torch.tensor(keep) if any(r < 1.0 for r in keep) else None, False)
        self.register_buffer(
            "scenario_weight", scenario_weight.float() if scenario_weight is not None else None
        )
        self.uncertainty = weighting == "uncertainty"
        # Weights moved by a balancer (msmtrec.training.balancing: GradNorm, DWA); ones otherwise. With a
        # balancer they are checkpointed with the loss, so a resumed run continues with them.
        n, keep = len(schema.tasks), weighting not in ("fixed", "uncertainty")
        self.weighting = weighting
        self.register_buffer("balance", torch.ones(n), persistent=keep)
        self.register_buffer("initial_loss", torch.full((n,), float("nan")), persistent=keep)
        self.register_buffer("loss_history", torch.full((2, n), float("nan")), persistent=keep)
        self.weighted_terms: torch.Tensor | None = None
        self.last_per_task: torch.Tensor | None = None
        # s_t = log σ_t²; zero start means every task begins with weight 1 as in the fixed scheme.
        self.log_var = nn.Parameter(torch.zeros(len(schema.tasks))) if self.uncertainty else None

    def forward(
        self, outputs: dict[str, torch.Tensor], labels: torch.Tensor, scenario: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        known = ~torch.isnan(labels)
        y = torch.nan_to_num(labels.float(), nan=0.0)
        # Every kind's term is finite for any input, so masking by weight never mixes a NaN/inf gradient in.
        pairs = enumerate(zip(self.task_names, self.kinds, strict=True))
        per_row = torch.stack([k.loss(outputs[n].float(), y[:, j]) for j, (n, k) in pairs], dim=1)
        w = known.to(per_row.dtype)
        if self.positive_weight is not None:
            w = w * torch.where(y > 0, self.positive_weight, 1.0)
        if self.negative_keep is not None and self.training:
            w = w * ((y > 0) | (torch.rand_like(y) < self.negative_keep)).to(w.dtype)
        if self.scenario_weight is not None:
            w = w * self.scenario_weight[scenario].unsqueeze(1)
        per_task = (per_row * w).sum(0) / known.sum(0).clamp(min=1)
        if self.log_var is not None:
            terms = self.loss_scale * torch.exp(-self.log_var) * per_task + 0.5 * self.log_var
        else:
            terms = per_task
        self.weighted_terms = self.task_weight * self.balance * terms  # per-task parts of the total, for balancers
        self.last_per_task = per_task
        return self.weighted_terms.sum(), per_task


def sampling_logit_offset(positive_weight: float = 1.0, negative_keep: float = 1.0) -> float:
    """The exact logit correction of training with weighted positives and down-sampled negatives.

    Keeping negatives at rate ``r`` and weighting positives by ``w`` multiplies the learned odds by
    ``w / r``; so ``p = q / (q + (1 - q) / r)`` (for ``w = 1``), i.e. ``logit p = logit q + log r - log w``.
    """
    return math.log(negative_keep) - math.log(positive_weight)


def sampling_offsets(config: Any, schema: Schema) -> dict[str, dict[str, float]]:
    """``{task: {"logit_offset": ...}}`` for the binary tasks a train config re-weights or down-samples."""
    pos, keep = config.positive_weight or {}, config.negative_sampling or {}
    return {
        name: {"logit_offset": sampling_logit_offset(float(pos.get(name, 1.0)), float(keep.get(name, 1.0)))}
        for name in schema.task_names
        if name in pos or name in keep
    }
