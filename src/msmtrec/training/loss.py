"""The multi-task loss: one formula for every model, driven by the schema's task types only.

Binary tasks use BCE-with-logits on the exposure-space logit the model returns. For a funnel task the
model already returns ``logit(p(parent) · p(child | parent))``, so plain BCE on the funnel label *is* the
ESMM loss and nothing here depends on which model is being trained. Regression tasks use (weighted) MSE.

Options:
* per-task weights (default ``Task.weight`` from the schema);
* uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018) with a learned log-variance ``s_t`` per task:
  ``exp(-s_t)·L_t + s_t/2`` for binary and ``exp(-s_t)·L_t/2 + s_t/2`` for regression tasks;
* per-sample scenario weights against scenario imbalance, normalised to mean 1 over the training split so
  the loss keeps its scale and the learning rate keeps its meaning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from msmtrec.data.schema import Schema


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
    ) -> None:
        super().__init__()
        self.task_names = schema.task_names
        self.register_buffer("task_weight", torch.tensor(task_weights, dtype=torch.float32))
        self.register_buffer("is_binary", torch.tensor([t.type == "binary" for t in schema.tasks]))
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
        pred = torch.stack([outputs[n] for n in self.task_names], dim=1).float()
        known = ~torch.isnan(labels)
        y = torch.nan_to_num(labels.float(), nan=0.0)
        # Both formulas are finite for any input, so torch.where never mixes a NaN/inf gradient in.
        bce = F.binary_cross_entropy_with_logits(pred, y * self.is_binary, reduction="none")
        per_row = torch.where(self.is_binary, bce, (pred - y) ** 2)
        w = known.to(per_row.dtype)
        if self.scenario_weight is not None:
            w = w * self.scenario_weight[scenario].unsqueeze(1)
        per_task = (per_row * w).sum(0) / known.sum(0).clamp(min=1)
        if self.log_var is not None:
            scale = torch.where(self.is_binary, 1.0, 0.5)
            terms = scale * torch.exp(-self.log_var) * per_task + 0.5 * self.log_var
        else:
            terms = per_task
        self.weighted_terms = self.task_weight * self.balance * terms  # per-task parts of the total, for balancers
        self.last_per_task = per_task
        return self.weighted_terms.sum(), per_task
