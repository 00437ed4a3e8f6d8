"""Field embedding: every feature field becomes one ``embed_dim`` token.

* sparse fields share one table with per-field offsets, so the lookup is a single gather for all fields;
* each dense field ``i`` becomes ``x_i * v_i + b_i`` (AutoInt's numeric-field embedding), so numeric and
  categorical fields are tokens of the same size that self-attention can mix;
* each sequence field is mean-pooled over its non-padding positions.

:func:`tables_on` lets a caller build the tables on another device (``meta``: no memory) when they are about
to be replaced by their TorchRec form (:mod:`msmtrec.layers.torchrec_embedding`), whose shards are allocated
by the sharding planner instead; the model that builds the layer does not change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

from msmtrec.data.schema import Batch, Schema

_TABLE_DEVICE: ContextVar[torch.device | None] = ContextVar("msmtrec_table_device", default=None)


@contextmanager
def tables_on(device: torch.device | str | None) -> Iterator[None]:
    """Within the block, every :class:`FieldEmbedding` built allocates its id tables on ``device``."""
    token = _TABLE_DEVICE.set(torch.device(device) if device is not None else None)
    try:
        yield
    finally:
        _TABLE_DEVICE.reset(token)


class FieldEmbedding(nn.Module):
    """Batch → ``[B, F, D]`` field tokens, ``F = schema.num_fields``."""

    def __init__(self, schema: Schema, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        sizes = [f.vocab_size for f in schema.sparse]
        offsets = torch.tensor([0, *sizes[:-1]], dtype=torch.long).cumsum(0) if sizes else torch.zeros(0)
        self.register_buffer("offsets", offsets.long(), persistent=False)
        table_device = _TABLE_DEVICE.get()
        self.sparse_table = nn.Embedding(max(sum(sizes), 1), embed_dim, device=table_device)
        n_dense = len(schema.dense)
        self.dense_weight = nn.Parameter(torch.empty(n_dense, embed_dim))
        self.dense_bias = nn.Parameter(torch.zeros(n_dense, embed_dim))
        self.seq_names = [s.name for s in schema.sequences]
        self.seq_tables = nn.ModuleDict(
            {
                str(i): nn.Embedding(s.vocab_size, embed_dim, padding_idx=0, device=table_device)
                for i, s in enumerate(schema.sequences)
            }
        )
        self.num_fields = schema.num_fields
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.sparse_table.weight, std=0.01)
        nn.init.normal_(self.dense_weight, std=0.1)
        for t in self.seq_tables.values():
            nn.init.normal_(t.weight, std=0.01)
            with torch.no_grad():
                t.weight[0].zero_()

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Embedding tables, which the trainer may give their own learning rate and weight decay."""
        return [self.sparse_table.weight, *(t.weight for t in self.seq_tables.values())]

    def forward(self, batch: Batch) -> torch.Tensor:
        parts = []
        sparse = batch["sparse"]
        if sparse.shape[1]:
            parts.append(self.sparse_table(sparse + self.offsets))
        dense = batch["dense"]
        if dense.shape[1]:
            parts.append(dense.unsqueeze(-1) * self.dense_weight + self.dense_bias)
        for i, name in enumerate(self.seq_names):
            codes = batch[f"seq:{name}"]
            emb = self.seq_tables[str(i)](codes)
            mask = (codes > 0).unsqueeze(-1).to(emb.dtype)
            parts.append(((emb * mask).sum(1) / mask.sum(1).clamp(min=1.0)).unsqueeze(1))
        return torch.cat(parts, dim=1)
