"""The TorchRec form of :class:`~msmtrec.layers.FieldEmbedding`: same ``Batch → [B, F, D]`` contract.

Every sparse field and every sequence field gets its own table in one ``EmbeddingBagCollection``, looked
up from a ``KeyedJaggedTensor``: a sparse field is a bag of one id (SUM pooling = the row), a sequence
field is the bag of its non-padding ids (MEAN pooling = the plain form's masked mean, 0 for an empty
list). Dense fields stay ``x_i * v_i + b_i``. Under ``DistributedModelParallel`` the collection is
replaced by its sharded version, so the tables can be split across ranks; the models never see the
difference because they only call ``self.embedding(batch)``.

The schema has no notion of two fields sharing one id space, so there is one table per field (a
spec that wants shared ids must encode them as one field).

Weights map one to one between the forms (:func:`plain_state_dict`, :func:`torchrec_state_dict`): the plain
``sparse_table`` is the concatenation of the per-field tables, ``seq_tables.i`` is table ``seq_i`` with its
padding row 0 zeroed. That is how a sharded run is consolidated into a plain ``model.pt`` that export,
predict and serve load unchanged.

Importing this module needs ``torchrec`` (the ``msmtrec[torchrec]`` extra); nothing else in msmtrec does.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers.embedding import FieldEmbedding

EBC = "ebc"
"""Attribute name of the collection; state-dict keys read ``<prefix>ebc.embedding_bags.<table>.weight``."""
_TABLE_KEY = re.compile(r"^(?P<prefix>.*)" + EBC + r"\.embedding_bags\.(?P<kind>sparse|seq)_(?P<i>\d+)\.weight$")


def sparse_table_name(i: int) -> str:
    return f"sparse_{i}"


def seq_table_name(i: int) -> str:
    return f"seq_{i}"


class TorchRecFieldEmbedding(nn.Module):
    """Batch → ``[B, F, D]`` field tokens through an ``EmbeddingBagCollection`` (one table per field).

    ``device="meta"`` builds the tables without memory, for ``DistributedModelParallel`` to allocate and
    initialise only this rank's shards.
    """

    def __init__(self, schema: Schema, embed_dim: int, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_fields = schema.num_fields
        self.sparse_features = [f"sparse:{f.name}" for f in schema.sparse]
        self.seq_features = [f"seq:{s.name}" for s in schema.sequences]  # also the batch keys of the sequences
        tables = [
            _table(sparse_table_name(i), feature, f.vocab_size, embed_dim, PoolingType.SUM)
            for i, (f, feature) in enumerate(zip(schema.sparse, self.sparse_features, strict=True))
        ] + [
            _table(seq_table_name(i), feature, s.vocab_size, embed_dim, PoolingType.MEAN)
            for i, (s, feature) in enumerate(zip(schema.sequences, self.seq_features, strict=True))
        ]
        self.has_tables = bool(tables)
        if tables:
            setattr(self, EBC, EmbeddingBagCollection(tables=tables, device=torch.device(device or "cpu")))
        n_dense = len(schema.dense)
        self.dense_weight = nn.Parameter(torch.empty(n_dense, embed_dim))
        self.dense_bias = nn.Parameter(torch.zeros(n_dense, embed_dim))
        nn.init.normal_(self.dense_weight, std=0.1)
        if tables and torch.device(device or "cpu").type != "meta":
            with torch.no_grad():
                for t in getattr(self, EBC).embedding_bags.values():
                    nn.init.normal_(t.weight, std=0.01)

    def features(self, batch: Batch) -> KeyedJaggedTensor:
        """The batch's id fields as one ``KeyedJaggedTensor``: sparse fields first, then sequences."""
        sparse = batch["sparse"]
        b = sparse.shape[0]
        values = [sparse.t().reshape(-1)] if self.sparse_features else []
        lengths = [torch.ones(b * len(self.sparse_features), dtype=torch.int64, device=sparse.device)]
        for key in self.seq_features:
            codes = batch[key]
            keep = codes > 0  # 0 is padding: out of the bag, as the plain form masks it out of its mean
            values.append(codes[keep])
            lengths.append(keep.sum(1))
        return KeyedJaggedTensor(
            keys=self.sparse_features + self.seq_features,
            values=torch.cat(values).long() if values else sparse.new_zeros(0),
            lengths=torch.cat(lengths).long(),
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        parts = []
        pooled = getattr(self, EBC)(self.features(batch)).to_dict() if self.has_tables else {}
        # A sharded collection orders its output by the plan: read it back by name, in schema order.
        if self.sparse_features:
            parts.append(torch.stack([pooled[f] for f in self.sparse_features], dim=1))
        dense = batch["dense"]
        if dense.shape[1]:
            parts.append(dense.unsqueeze(-1) * self.dense_weight + self.dense_bias)
        parts.extend(pooled[f].unsqueeze(1) for f in self.seq_features)
        return torch.cat(parts, dim=1)


def _table(name: str, feature: str, rows: int, dim: int, pooling: PoolingType) -> EmbeddingBagConfig:
    # weight_init_min/max: what the sharded (fused) kernels use to fill the shards they allocate; a uniform
    # of the same spread as the plain form's N(0, 0.01).
    bound = 0.01 * 3**0.5
    return EmbeddingBagConfig(
        name=name,
        embedding_dim=dim,
        num_embeddings=rows,
        feature_names=[feature],
        pooling=pooling,
        weight_init_min=-bound,
        weight_init_max=bound,
    )


def to_torchrec(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """Replace every :class:`FieldEmbedding` inside ``model`` by its TorchRec form, in place.

    The weights are carried over unless the plain tables (or ``device``) are on ``meta``; returns ``model``.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, FieldEmbedding):
                continue
            schema = _schema_of(child, model)
            if not schema.sparse and not schema.sequences:
                continue  # no id tables: nothing to shard
            meta = child.sparse_table.weight.device.type == "meta" or torch.device(device or "cpu").type == "meta"
            new = TorchRecFieldEmbedding(schema, child.embed_dim, device="meta" if meta else device)
            if meta:
                with torch.no_grad():
                    new.dense_weight.copy_(child.dense_weight)
                    new.dense_bias.copy_(child.dense_bias)
            else:
                new.load_state_dict(torchrec_state_dict(child.state_dict(), schema))
            setattr(parent, name, new)
    return model


def _schema_of(layer: FieldEmbedding, model: nn.Module) -> Schema:
    schema = getattr(model, "schema", None)
    if not isinstance(schema, Schema) or schema.num_fields != layer.num_fields:
        raise ValueError("to_torchrec needs a model with a .schema matching its FieldEmbedding layers")
    return schema


def torchrec_state_dict(plain: dict[str, torch.Tensor], schema: Schema, prefix: str = "") -> dict[str, torch.Tensor]:
    """One plain :class:`FieldEmbedding` state dict (keys under ``prefix``) in the TorchRec form."""
    out = {k: v for k, v in plain.items() if not k.startswith((prefix + "sparse_table.", prefix + "seq_tables."))}
    sizes = [f.vocab_size for f in schema.sparse]
    if sizes:
        for i, part in enumerate(torch.split(plain[prefix + "sparse_table.weight"], sizes)):
            out[f"{prefix}{EBC}.embedding_bags.{sparse_table_name(i)}.weight"] = part.clone()
    for i in range(len(schema.sequences)):
        out[f"{prefix}{EBC}.embedding_bags.{seq_table_name(i)}.weight"] = plain[f"{prefix}seq_tables.{i}.weight"]
    return out


def plain_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A whole model's state dict with every TorchRec-form embedding back in the plain form.

    Works on full (consolidated) tensors and needs no schema: the table names carry the field order.
    Keys of other modules pass through unchanged.
    """
    out: dict[str, torch.Tensor] = {}
    groups: dict[str, dict[str, dict[int, torch.Tensor]]] = {}
    for key, value in state.items():
        m = _TABLE_KEY.match(key)
        if m is None:
            out[key] = value
            continue
        groups.setdefault(m["prefix"], {"sparse": {}, "seq": {}})[m["kind"]][int(m["i"])] = value
    for prefix, tables in groups.items():
        sparse = [tables["sparse"][i] for i in sorted(tables["sparse"])]
        if sparse:
            out[prefix + "sparse_table.weight"] = torch.cat(sparse)
        else:
            dim = state[prefix + "dense_weight"].shape[1]
            out[prefix + "sparse_table.weight"] = torch.zeros(1, dim)
        for i, weight in tables["seq"].items():
            weight = weight.clone()
            weight[0] = 0.0  # the plain form's padding row
            out[f"{prefix}seq_tables.{i}.weight"] = weight
    return out
