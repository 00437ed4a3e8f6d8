"""Process-group setup for ``torchrun``: the same command trains single-process or with DDP.

``torchrun`` exports ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; when ``WORLD_SIZE > 1`` we join the group
with gloo on CPU and NCCL on CUDA (one GPU per local rank). Everything else in the trainer asks
:class:`DistContext` instead of reading the environment, so tests can run the trainer without torchrun.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from msmtrec.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Rank layout of this process; ``world_size == 1`` means plain single-process training."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` in rank order (just ``[obj]`` without a process group)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def resolve_device(preference: str, ctx: DistContext | None = None) -> torch.device:
    """``auto`` picks CUDA when present; under DDP each process takes the GPU of its local rank."""
    ctx = ctx or DistContext()
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but CUDA is not available; use --device cpu or auto")
    return torch.device("cuda", ctx.local_rank % torch.cuda.device_count())


def init_distributed(device_preference: str = "auto") -> tuple[DistContext, torch.device]:
    """Join the ``torchrun`` process group if there is one; returns this process's context and device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), resolve_device(device_preference)
    ctx = DistContext(
        rank=int(os.environ["RANK"]), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )
    device = resolve_device(device_preference, ctx)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return ctx, device


def shutdown_distributed() -> None:
    """Leave the process group, first freeing what still uses it.

    A DDP wrapper (and its gloo reducer) caught in a reference cycle survives ``fit`` until the garbage
    collector runs; left to the interpreter's exit, the reducer outlives its group and the rank aborts with
    "terminate called without an active exception". Collecting here frees it while the group exists."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
