"""PPNet, the parameter-personalisation half of PEPNet (Chang et al., "PEPNet: Parameter and Embedding
Personalized Network for Infusing with Personalized Prior Information", KDD 2023,
https://arxiv.org/abs/2302.01115; PPNet first ran at Kuaishou in 2019), as Scenario-Wise-Rec ships it.

Per tower layer, a gate NU on ``prior ⊕ stop_gradient(embeddings)`` scales every hidden unit of every task's
tower by a factor in (0, γ): the towers' parameters are personalised to the prior. Our schema has no
separate persona fields, so the scenario embedding is the prior; the EPNet field scales are off.
"""

from __future__ import annotations

from typing import ClassVar

from msmtrec.models.base import register
from msmtrec.models.pepnet import PEPNet


@register("ppnet")
class PPNet(PEPNet):
    personalise_embeddings: ClassVar[bool] = False
    personalise_parameters: ClassVar[bool] = True
