"""EPNet, the embedding-personalisation half of PEPNet (Chang et al., "PEPNet: Parameter and Embedding
Personalized Network for Infusing with Personalized Prior Information", KDD 2023,
https://arxiv.org/abs/2302.01115), as Scenario-Wise-Rec ships it on its own.

A gate NU on ``scenario embedding ⊕ stop_gradient(field embeddings)`` scales every field's embedding by a
factor in (0, γ), so the same features weigh differently per scenario; plain task towers follow (the PPNet
gates are off). Multi-task: one tower per task over the personalised embeddings, as in PEPNet.
"""

from __future__ import annotations

from typing import ClassVar

from msmtrec.models.base import register
from msmtrec.models.pepnet import PEPNet


@register("epnet")
class EPNet(PEPNet):
    personalise_embeddings: ClassVar[bool] = True
    personalise_parameters: ClassVar[bool] = False
