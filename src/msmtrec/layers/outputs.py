"""Task towers and the output convention (exposure-space logits, ESMM-style funnels)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from msmtrec.data.schema import Schema
from msmtrec.layers.mlp import MLP
from msmtrec.tasks import kind_of


def output_dims(schema: Schema) -> list[int]:
    """Width of each task's raw output (schema order), from the task's kind (``ziln`` emits 3 numbers)."""
    return [kind_of(t).output_dim for t in schema.tasks]


def task_output(raw: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A ``[B, k]`` head output → the task's output: ``[B]`` when ``k == 1``, else ``[B, k]``.

    ``bias`` (``[B]``, e.g. STAR's auxiliary logit) is added to the first column only: the logit of a
    binary task, the purchase logit of a ``ziln`` task.
    """
    if bias is not None and raw.shape[-1] == 1:
        raw = raw + bias.unsqueeze(-1)
    elif bias is not None:
        raw = torch.cat([raw[:, :1] + bias.unsqueeze(-1), raw[:, 1:]], dim=-1)
    return raw.squeeze(-1) if raw.shape[-1] == 1 else raw


def funnel_logit(parent_logit: torch.Tensor, child_logit: torch.Tensor) -> torch.Tensor:
    """logit(sigmoid(parent) · sigmoid(child)), computed in log space to stay finite.

    ESMM (Ma et al., SIGIR 2018): p(conversion) = p(click) · p(conversion | click), trained on the whole
    exposure space so the conditional tower never sees the sample-selection bias of click-only data.
    """
    log_p = F.logsigmoid(parent_logit) + F.logsigmoid(child_logit)
    log_1mp = torch.log1p(-torch.exp(log_p).clamp(max=1.0 - 1e-7))
    return log_p - log_1mp


def compose_outputs(schema: Schema, raw: Sequence[torch.Tensor], funnel: bool = True) -> dict[str, torch.Tensor]:
    """Raw per-task outputs (schema order) → the output dict, funnel tasks composed ESMM-style.

    With ``funnel`` a task declared ``inside`` a parent returns ``funnel_logit(composed parent, child)``: the
    child's tower learns p(child | parent) and the output is p(child) = p(parent chain) · p(child | parent), so
    a funnel of any depth stays in the exposure space (click → cart → buy multiplies all three). The parent's
    *composed* output is used, never its raw tower output, whatever order the tasks are declared in.
    """
    names = schema.task_names
    out: dict[str, torch.Tensor] = {}

    def composed(i: int) -> torch.Tensor:
        name = names[i]
        if name not in out:
            parent = schema.tasks[i].inside
            if funnel and parent:
                out[name] = funnel_logit(composed(names.index(parent)), raw[i])
            else:
                out[name] = raw[i]
        return out[name]

    for i in range(len(names)):
        composed(i)
    return {name: out[name] for name in names}


class TaskHeads(nn.Module):
    """One MLP tower per task on top of per-task inputs, plus the funnel composition.

    ``funnel=True`` turns every task declared ``inside`` another into an ESMM-style product with its
    parent; otherwise each task is predicted directly in the exposure space.
    """

    def __init__(self, schema: Schema, in_dim: int, dims: Sequence[int], dropout: float, funnel: bool = True) -> None:
        super().__init__()
        self.schema = schema
        self.names = schema.task_names
        self.towers = nn.ModuleList(
            nn.Sequential(MLP(in_dim, dims, dropout), nn.Linear(dims[-1] if dims else in_dim, k))
            for k in output_dims(schema)
        )
        self.funnel = funnel
        self.parent_index = {i: self.names.index(t.inside) for i, t in enumerate(schema.tasks) if t.inside and funnel}

    def forward(self, inputs: Sequence[torch.Tensor], extra: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``inputs[i]``: task i's ``[B, in_dim]`` input; ``extra``: a ``[B, n_tasks]`` logit bias."""
        if extra is None:
            raw = [task_output(tower(x)) for tower, x in zip(self.towers, inputs, strict=True)]
        else:
            pairs = enumerate(zip(self.towers, inputs, strict=True))
            raw = [task_output(tower(x), extra[:, i]) for i, (tower, x) in pairs]
        return compose_outputs(self.schema, raw, self.funnel)
