"""Learnable balanced mixing of shared, scenario and task representations, and its balance regulariser.

For every (scenario, task) pair a model needs its own trade-off between what all traffic shares, what the
scenario knows and what the task needs. :class:`BalancedMixing` keeps a ``[n_scenarios, n_tasks, 3]`` logit
table (zero-initialised: every pair starts from an even mix), optionally modulated per row by a linear map
of the input, and returns softmax weights over the representations present.

:func:`scenario_balance_loss` counters the pull of traffic: shared experts are trained mostly by the largest
scenario, whose rows can capture them. It computes each scenario's mean gate usage of the shared experts
and penalises its KL divergence to uniform, averaging over the scenarios present in the batch with *equal*
weight regardless of their row counts, so a small scenario's routing counts as much as a large one's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from msmtrec.layers.experts import linear_t, softmax_rows

MixingMode = Literal["learned", "uniform"]


class BalancedMixing(nn.Module):
    """Per-(scenario, task) weights ``[B, 3]`` over (shared, scenario, task); absent groups get 0."""

    present: torch.Tensor

    def __init__(
        self,
        num_scenarios: int,
        num_tasks: int,
        present: Sequence[bool] = (True, True, True),
        mode: MixingMode = "learned",
        input_dim: int = 0,
    ) -> None:
        super().__init__()
        if mode not in ("learned", "uniform"):
            raise ValueError(f"mixing must be 'learned' or 'uniform', got {mode!r}")
        if len(present) != 3 or not any(present):
            raise ValueError("present must flag 3 groups, at least one of them present")
        self.mode = mode
        self.register_buffer("present", torch.tensor([bool(p) for p in present]), persistent=False)
        self.logits = nn.Parameter(torch.zeros(num_scenarios, num_tasks, 3)) if mode == "learned" else None
        self.modulation: nn.ModuleList | None = None
        if mode == "learned" and input_dim > 0:
            self.modulation = nn.ModuleList(nn.Linear(input_dim, 3) for _ in range(num_tasks))
            for m in self.modulation:
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, scenario: torch.Tensor, task: int, x: torch.Tensor | None = None) -> torch.Tensor:
        if self.logits is None:
            w = self.present.to(torch.float32) / self.present.sum()
            return w.unsqueeze(0).expand(scenario.shape[0], 3)
        logits = self.logits[:, task].t().index_select(1, scenario)  # [3, B]
        if self.modulation is not None and x is not None:
            m = self.modulation[task]
            logits = logits + linear_t(x, m.weight, m.bias)
        return softmax_rows(logits.masked_fill(~self.present.unsqueeze(1), float("-inf")))


def scenario_balance_loss(weights: torch.Tensor, scenario: torch.Tensor, num_scenarios: int) -> torch.Tensor:
    """Mean over present scenarios of KL(mean shared-expert usage of the scenario ‖ uniform).

    ``weights`` is ``[B, n]`` (rows sum to one). Zero when every scenario spreads its load evenly.
    """
    n = weights.shape[1]
    count = weights.new_zeros(num_scenarios).index_add(0, scenario, weights.new_ones(weights.shape[0]))
    usage = weights.new_zeros(num_scenarios, n).index_add(0, scenario, weights) / count.clamp(min=1.0).unsqueeze(1)
    kl = (usage * (torch.log(usage.clamp(min=1e-12)) + math.log(n))).sum(dim=1)
    present = (count > 0).to(weights.dtype)
    return (kl * present).sum() / present.sum().clamp(min=1.0)
