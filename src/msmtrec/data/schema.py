"""The encoded-data contract shared by every layer above the data package.

A fitted preprocessing artifact describes its output as a :class:`Schema`; models are built from a schema
and consume :data:`Batch` dictionaries. Keeping this one small, dependency-free module as the meeting point
means models never need to know how a dataset was read or encoded, and the trainer, export and service can
feed any model the same way.

Batch layout (a flat ``dict[str, torch.Tensor]`` so it survives DDP, ``torch.export`` and ONNX unchanged):

``sparse``   int64 ``[B, n_sparse]``   per-field codes in ``[0, field.vocab_size)``; code 0 is the
                                       out-of-vocabulary / missing bucket of that field.
``dense``    float32 ``[B, n_dense]``  already normalised numeric features (missing values imputed).
``seq:<name>`` int64 ``[B, max_len]``  one key per sequence field; code 0 is padding, 1 out-of-vocabulary.
``scenario`` int64 ``[B]``             index into ``schema.scenarios``.
``labels``   float32 ``[B, n_tasks]``  training targets in ``schema.tasks`` order (absent at inference).
``user_id``  int64 ``[B]``             present when the spec marks a user id column (for GAUC).
``item_id``  int64 ``[B]``             present when the spec marks an item id column (for ranking).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

from msmtrec.tasks import kind_of

Batch = dict[str, torch.Tensor]

TaskType = str
"""The name of a registered task kind (:mod:`msmtrec.tasks`): ``binary``, ``regression``, ``ziln``."""


@dataclass(frozen=True)
class SparseField:
    """A categorical field after encoding: codes live in ``[0, vocab_size)``, 0 being OOV/missing."""

    name: str
    vocab_size: int
    source: Literal["categorical", "hashed", "bucketised"] = "categorical"


@dataclass(frozen=True)
class SequenceField:
    """A list-valued field padded to ``max_len``: 0 is padding, 1 is OOV, real values start at 2."""

    name: str
    vocab_size: int
    max_len: int


@dataclass(frozen=True)
class Task:
    """A prediction target. ``inside`` names the parent task of a funnel (conversion inside click).

    ``type`` names the task's kind (:func:`msmtrec.tasks.kind_of` gives the object that knows how to check,
    train, map and score it); ``transform`` is the target transform the labels were encoded with.
    """

    name: str
    type: TaskType
    inside: str | None = None
    weight: float = 1.0
    transform: str = "none"


@dataclass(frozen=True)
class Schema:
    """Everything a model needs to size itself; built by the preprocessor, stored in the artifact."""

    sparse: tuple[SparseField, ...]
    dense: tuple[str, ...]
    sequences: tuple[SequenceField, ...]
    scenarios: tuple[str, ...]
    tasks: tuple[Task, ...]
    user_id: str | None = None
    item_id: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_fields(self) -> int:
        """Number of field tokens a model sees: sparse + dense + sequence fields."""
        return len(self.sparse) + len(self.dense) + len(self.sequences)

    @property
    def num_scenarios(self) -> int:
        return len(self.scenarios)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"unknown task {name!r}; known tasks: {self.task_names}")

    def field_names(self) -> list[str]:
        """Field-token names in the order models lay them out (used to label attention maps)."""
        return [f.name for f in self.sparse] + list(self.dense) + [s.name for s in self.sequences]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Schema:
        return cls(
            sparse=tuple(SparseField(**f) for f in d["sparse"]),
            dense=tuple(d["dense"]),
            sequences=tuple(SequenceField(**s) for s in d["sequences"]),
            scenarios=tuple(d["scenarios"]),
            tasks=tuple(Task(**t) for t in d["tasks"]),
            user_id=d.get("user_id"),
            item_id=d.get("item_id"),
            extra=dict(d.get("extra") or {}),
        )


def synthetic_schema(
    n_sparse: int = 4,
    vocab: int = 20,
    n_dense: int = 3,
    scenarios: int = 3,
    tasks: tuple[Task, ...] = (Task("click", "binary"), Task("buy", "binary", inside="click")),
    seq_len: int = 0,
) -> Schema:
    """A small schema for tests and examples (no data files needed)."""
    seqs = (SequenceField("hist", vocab, seq_len),) if seq_len else ()
    return Schema(
        sparse=tuple(SparseField(f"c{i}", vocab) for i in range(n_sparse)),
        dense=tuple(f"d{i}" for i in range(n_dense)),
        sequences=seqs,
        scenarios=tuple(f"s{i}" for i in range(scenarios)),
        tasks=tasks,
    )


def random_batch(schema: Schema, batch_size: int, generator: torch.Generator | None = None) -> Batch:
    """A random batch that obeys the layout above; labels are random too (for shape tests only)."""
    g = generator
    b: Batch = {
        "sparse": torch.stack(
            [torch.randint(0, f.vocab_size, (batch_size,), generator=g) for f in schema.sparse], dim=1
        )
        if schema.sparse
        else torch.zeros(batch_size, 0, dtype=torch.long),
        "dense": torch.randn(batch_size, len(schema.dense), generator=g),
        "scenario": torch.randint(0, schema.num_scenarios, (batch_size,), generator=g),
    }
    for s in schema.sequences:
        b[f"seq:{s.name}"] = torch.randint(0, s.vocab_size, (batch_size, s.max_len), generator=g)
    labels = [kind_of(t).random_labels(batch_size, g) for t in schema.tasks]
    b["labels"] = torch.stack(labels, dim=1) if labels else torch.zeros(batch_size, 0)
    return b
