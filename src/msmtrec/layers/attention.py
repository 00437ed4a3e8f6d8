"""Multi-head self-attention over field tokens with a residual connection (AutoInt: Song et al., CIKM 2019).

Each field attends to every other field, so feature interactions of any order can be learnt by stacking
layers. Written with plain ``matmul``/``softmax`` (no fused kernels) so it traces with TorchScript and
exports with ``torch.export``/ONNX dynamo, and so the per-head ``[B, H, F, F]`` weights can be returned
for inspection.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SHORT_SOFTMAX = 16
"""Below this many fields the attention softmax runs over a leading axis (see :func:`field_softmax`)."""


def field_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis (the key fields) of ``[..., F]`` attention scores.

    PyTorch's CPU softmax only vectorises a last axis of 16 or more elements; over fewer (most datasets
    have under 16 fields) it is several times slower than the same softmax over a contiguous *leading* axis.
    So for short rows the scores are laid out key-field-first, normalised there, and handed back as a view;
    from 16 fields on the plain softmax is faster and is used (``benchmarks/attention_forms.py`` measures it).
    """
    if scores.shape[-1] >= SHORT_SOFTMAX:
        return torch.softmax(scores, dim=-1)
    nd = scores.dim()
    lead = torch.softmax(scores.permute(nd - 1, *range(nd - 1)).contiguous(), dim=0)
    return lead.permute(*range(1, nd), 0)


FACTORED_MAX_WIDTH = 128
"""An attention layer uses the factored form while ``heads × input dim`` is at most this (see
:class:`FieldAttentionLayer`)."""


class FieldAttentionLayer(nn.Module):
    """One AutoInt interacting layer: ``[B, F, D_in] → [B, F, H·d_h]`` plus ``[B, H, F, F]`` weights.

    Two exact formulations of the same maths, chosen by head count:

    * **split** (the textbook one): project to per-head queries, keys and values, lay them out
      ``[B, H, F, d_h]`` and multiply. Each layout change is a copy, and the products are ``B·H`` tiny
      ``F × d_h`` matrices.
    * **factored**, while ``heads × D_in`` ≤ :data:`FACTORED_MAX_WIDTH`: ``q_h · k_h = x M_h xᵀ`` with
      ``M_h = W_qhᵀ W_kh / √d_h``, and the value projection moved after the weighting, as one block-diagonal
      multiply over all heads. Every intermediate stays in the ``[B, F·H, ·]`` layout the matmuls produce,
      so there are no copies. It does ``H·D_in/d_h`` times the split form's arithmetic in the two
      products, which is why it is only used while that stays small (``python benchmarks/attention_forms.py``
      times both forms; the figures are in docs/changelog.md).

    The parameters are the same four projections either way, so saved runs load in both.

    ``norm=True`` computes the queries and keys from ``LayerNorm(x)`` (pre-norm, as in standard
    transformers); values and the residual still read ``x``. Why: the scores ``x M xᵀ`` scale with
    ``|x|²``, and field embeddings start at std 0.01, so without it every score starts at ~1e-4, the
    softmax is uniform and its gradient is too small to leave zero in the few epochs early stopping allows
    (docs/hef.md, section 2). Normalised tokens give unit-scale scores at initialisation whatever the
    embedding norm.
    """

    def __init__(self, in_dim: int, heads: int, head_dim: int, residual: bool = True, norm: bool = False) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        out = heads * head_dim
        self.norm = nn.LayerNorm(in_dim) if norm else None
        self.query = nn.Linear(in_dim, out, bias=False)
        self.key = nn.Linear(in_dim, out, bias=False)
        self.value = nn.Linear(in_dim, out, bias=False)
        self.residual = nn.Linear(in_dim, out, bias=False) if residual else None
        self.out_dim = out
        self.factored = heads * in_dim <= FACTORED_MAX_WIDTH

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, weights = self._factored(x) if self.factored else self._split_heads(x)
        if self.residual is not None:
            out = out + self.residual(x)
        return F.relu(out), weights

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, f, _ = x.shape
        return x.reshape(b, f, self.heads, self.head_dim).transpose(1, 2)  # [B, H, F, d_h]

    def _scored(self, x: torch.Tensor) -> torch.Tensor:
        """The tokens the queries and keys are computed from: ``x``, or ``LayerNorm(x)`` with ``norm``."""
        return self.norm(x) if self.norm is not None else x

    def _split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self._scored(x)
        q, k, v = self._split(self.query(z)), self._split(self.key(z)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        weights = field_softmax(scores)  # [B, H, F, F]
        out = torch.matmul(weights, v).transpose(1, 2).reshape(x.shape[0], x.shape[1], self.out_dim)
        return out, weights

    def _factored(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, f, d = x.shape
        h, dh = self.heads, self.head_dim
        wq = self.query.weight.view(h, dh, d)  # Linear computes x Wᵀ, so head h's rows are W[h·dh:(h+1)·dh]
        wk = self.key.weight.view(h, dh, d)
        wv = self.value.weight.view(h, dh, d)
        bilinear = torch.matmul(wq.transpose(1, 2), wk) / math.sqrt(dh)  # [H, D, D]: q_h·k_h = x M_h xᵀ
        z = self._scored(x)
        zm = torch.matmul(z, bilinear.transpose(0, 1).reshape(d, h * d)).view(b, f * h, d)  # rows (field, head)
        scores = torch.bmm(zm, z.transpose(1, 2))  # [B, F·H, F]
        weights = field_softmax(scores)
        mixed = torch.bmm(weights, x)  # [B, F·H, D]: Σ_j a_hij x_j, the value projection still to come
        values = torch.block_diag(*(wv[i].t() for i in range(h)))  # [H·D, H·d_h]
        out = torch.matmul(mixed.view(b * f, h * d), values).view(b, f, self.out_dim)
        return out, weights.view(b, f, h, f).transpose(1, 2)  # [B, H, F, F] like the split form


class FieldSelfAttention(nn.Module):
    """A stack of interacting layers; the output keeps ``embed_dim`` per field (``heads · head_dim``)."""

    def __init__(self, num_fields: int, embed_dim: int, heads: int = 2, layers: int = 1, norm: bool = False) -> None:
        super().__init__()
        if embed_dim % heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by attention heads {heads}")
        self.num_fields = num_fields
        self.layers = nn.ModuleList(
            FieldAttentionLayer(embed_dim, heads, embed_dim // heads, norm=norm) for _ in range(max(layers, 1))
        )
        self.out_dim = embed_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, F, D]`` → (``[B, F, D]``, last layer's ``[B, H, F, F]`` attention weights)."""
        weights = x.new_zeros(())
        for layer in self.layers:
            x, weights = layer(x)
        return x, weights

    def extra_flops(self) -> int:
        """Q·Kᵀ and A·V products, plus the projections applied to every field (not just once).

        This is the split-heads form's count, the model's own arithmetic; the factored form does somewhat
        more multiply-adds in fewer, copy-free calls, and is used because it is faster, not smaller."""
        f = self.num_fields
        total = 0
        for layer in self.layers:
            d = layer.out_dim
            proj = sum(2 * m.in_features * m.out_features for m in layer.modules() if isinstance(m, nn.Linear))
            total += 2 * 2 * f * f * d + (f - 1) * proj
        return total
