"""The scenario as one more field token, for models whose paper has no notion of a scenario.

Multi-task-only architectures (OMoE, AITM, DBMTL, STEM, AdaTT, HoME) are run in the multi-scenario
literature with the domain id as an ordinary categorical feature (e.g. the MTL baselines of HiNet, M3oE and
Scenario-Wise-Rec): the scenario gets its own embedding, appended to the field tokens, and the architecture
is left as the paper describes it.
"""

from __future__ import annotations

import torch
from torch import nn


class ScenarioField(nn.Module):
    """``[B, F, D]`` tokens + ``[B]`` scenario ids → ``[B, F + 1, D]`` (the scenario token last)."""

    def __init__(self, num_scenarios: int, embed_dim: int) -> None:
        super().__init__()
        self.table = nn.Embedding(num_scenarios, embed_dim)
        nn.init.normal_(self.table.weight, std=0.01)  # the same scale as FieldEmbedding's sparse rows

    def forward(self, tokens: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        return torch.cat([tokens, self.table(scenario).unsqueeze(1)], dim=1)
