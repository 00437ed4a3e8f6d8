"""Small generated data with a planted signal, for tests and examples that must not need files.

Every task's logit is a fixed random function of the features plus a scenario shift, so a model that
learns should reach high AUC quickly; funnel tasks are only positive where their parent is.
"""

from __future__ import annotations

import torch

from msmtrec.data.dataset import TensorDataset
from msmtrec.data.schema import Batch, Schema, random_batch
from msmtrec.tasks import kind_of


def planted_batch(schema: Schema, rows: int, seed: int = 0, strength: float = 3.0) -> Batch:
    """A batch of ``rows`` whose labels follow a planted, learnable rule (same rule for every seed)."""
    rule = torch.Generator().manual_seed(12345)
    data = random_batch(schema, rows, torch.Generator().manual_seed(seed))
    n_tasks = len(schema.tasks)
    logits = torch.zeros(rows, n_tasks)
    for j, f in enumerate(schema.sparse):
        table = torch.randn(f.vocab_size, n_tasks, generator=rule)
        logits += table[data["sparse"][:, j]]
    if schema.dense:
        w = torch.randn(len(schema.dense), n_tasks, generator=rule)
        logits += data["dense"] @ w
    scen_shift = torch.randn(schema.num_scenarios, n_tasks, generator=rule)
    logits += scen_shift[data["scenario"]]
    logits = strength * (logits - logits.mean(0)) / logits.std(0).clamp(min=1e-6)
    noise = torch.Generator().manual_seed(seed + 777)
    labels = torch.empty(rows, n_tasks)
    names = schema.task_names
    for i, t in enumerate(schema.tasks):
        labels[:, i] = kind_of(t).planted_labels(logits[:, i], noise)
    for i, t in enumerate(schema.tasks):
        if t.inside:
            labels[:, i] *= labels[:, names.index(t.inside)]
    data["labels"] = labels
    return data


def planted_splits(schema: Schema, rows: int = 4000, seed: int = 0) -> dict[str, TensorDataset]:
    """train / valid / test splits (80/10/10) of a planted dataset."""
    full = planted_batch(schema, rows, seed)
    a, b = int(rows * 0.8), int(rows * 0.9)
    return {
        "train": TensorDataset({k: v[:a] for k, v in full.items()}),
        "valid": TensorDataset({k: v[a:b] for k, v in full.items()}),
        "test": TensorDataset({k: v[b:] for k, v in full.items()}),
    }
