"""In-memory datasets that batch by slicing whole tensors (no per-row Python in the hot path).

A :class:`TensorDataset` holds one split as a :data:`~msmtrec.data.schema.Batch` of equal-length
tensors. Each epoch draws one permutation from ``seed + epoch`` and yields contiguous slices of the
permuted tensors, so iteration cost is a handful of ``index_select`` calls per batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from msmtrec.data.schema import Batch


class TensorDataset:
    """One encoded split held as whole tensors."""

    def __init__(self, tensors: Batch) -> None:
        lengths = {k: int(v.shape[0]) for k, v in tensors.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"tensors of different lengths: {lengths}")
        self.tensors = tensors
        self.num_rows = next(iter(lengths.values())) if lengths else 0

    def __len__(self) -> int:
        return self.num_rows

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        full, rest = divmod(self.num_rows, batch_size)
        return full + (1 if rest and not drop_last else 0)

    def shard(self, rank: int, world_size: int) -> TensorDataset:
        """Rows ``rank, rank + world_size, ...``: each distributed worker gets a disjoint, even shard."""
        idx = torch.arange(rank, self.num_rows, world_size)
        return TensorDataset({k: v.index_select(0, idx) for k, v in self.tensors.items()})

    def subset(self, index: torch.Tensor) -> TensorDataset:
        return TensorDataset({k: v.index_select(0, index) for k, v in self.tensors.items()})

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        start_batch: int = 0,
    ) -> Iterator[Batch]:
        """Yield batches; with ``shuffle`` the order depends only on ``(seed, epoch)``.

        ``start_batch`` skips the first batches of the epoch, which lets a resumed run continue exactly
        where an interrupted one stopped.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if shuffle:
            g = torch.Generator().manual_seed(seed * 100_003 + epoch)
            order = torch.randperm(self.num_rows, generator=g)
            data = {k: v.index_select(0, order) for k, v in self.tensors.items()}
        else:
            data = self.tensors
        n = self.num_batches(batch_size, drop_last)
        for i in range(start_batch, n):
            lo = i * batch_size
            yield {k: v[lo : lo + batch_size] for k, v in data.items()}
