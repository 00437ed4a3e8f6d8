"""Embedding tables sharded across ranks with TorchRec (``train.embeddings=torchrec``).

The model is built as usual; :func:`build_model_torchrec` swaps its :class:`~msmtrec.layers.FieldEmbedding`
layers for their TorchRec form (under ``torchrun`` with the tables on ``meta``, so no rank ever allocates a
whole table). :class:`ShardedTrainer` is the :class:`~msmtrec.training.trainer.Trainer` with four hooks
changed; the training loop, early stopping and the exact-resume bookkeeping are the same code:

* ``_wrap``: ``DistributedModelParallel`` with a plan from TorchRec's planner, constrained by
  ``train.sharding`` (field → sharding type) and ``train.shard_memory_mb``; gloo on CPU, NCCL on CUDA (the
  process group comes from :mod:`msmtrec.training.distributed`). Sharded tables are updated inside the
  backward pass by fbgemm's fused optimiser; the dense part (and data-parallel tables) by Adam under DDP.
* ``_save_state`` / ``_load_state``: ``last.pt`` keeps what is not sharded (position, per-rank RNG and loss
  sums, dense optimiser, history); the sharded model and fused optimiser state go to a
  ``torch.distributed.checkpoint`` folder ``sharded/step-N`` named by ``last.pt``. Folders are written
  before ``last.pt`` names them and removed after, so a kill at any instant leaves a resumable run.
* ``_save_best`` / ``_restore_best``: the best weights are a sharded folder too (``sharded/best-N``); at
  the end they are loaded back and, with ``train.consolidate``, gathered into the plain ``model.pt`` that
  export, predict and serve read (:func:`consolidate` does the same offline).

CPU notes (fbgemm-gpu-cpu 1.8.0, torchrec 1.8.0): the stock ``EmbeddingBagCollectionSharder`` offers
row-wise and table-row-wise only for CUDA; :class:`CpuRowWiseSharder` adds them back for CPU, where they
work. fbgemm's CPU kernels have no fused Adam (EXACT_ADAGRAD, EXACT_ROWWISE_ADAGRAD, EXACT_SGD only).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec import optim as trec_optim
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.planner.types import PlannerError
from torchrec.distributed.types import ShardingPlan, ShardingType
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.optimizers import in_backward_optimizer_filter

from msmtrec.data.dataset import TensorDataset
from msmtrec.errors import ConfigError
from msmtrec.layers.embedding import tables_on
from msmtrec.layers.torchrec_embedding import (
    TorchRecFieldEmbedding,
    plain_state_dict,
    seq_table_name,
    sparse_table_name,
    to_torchrec,
)
from msmtrec.models.base import MultiTaskModel
from msmtrec.runs import WEIGHTS
from msmtrec.training import io
from msmtrec.training.config import TrainConfig
from msmtrec.training.distributed import DistContext
from msmtrec.training.metrics import Predictions, predict_split
from msmtrec.training.trainer import (
    STATE_FILE,
    Trainer,
    TrainingModule,
    TrainState,
    _state_dict,
    build_optimizer,
)

SHARDED_DIR = "sharded"
"""Run sub-folder of the ``torch.distributed.checkpoint`` folders (``step-N`` resumable, ``best-N``)."""


class CpuRowWiseSharder(EmbeddingBagCollectionSharder):
    """The stock sharder, plus row-wise and table-row-wise on CPU (stock offers them for CUDA only)."""

    def sharding_types(self, compute_device_type: str) -> list[str]:
        types = list(super().sharding_types(compute_device_type))
        if compute_device_type == "cpu":
            types += [t.value for t in (ShardingType.ROW_WISE, ShardingType.TABLE_ROW_WISE) if t.value not in types]
        return types


# ------------------------------------------------------------------------------------------------ model


def build_model_torchrec(build: Callable[[], MultiTaskModel], ctx: DistContext) -> MultiTaskModel:
    """``build()``'s model with its embedding layers in the TorchRec form.

    Under torchrun the tables are built on ``meta`` (no memory) and only this rank's shards are allocated
    later by ``DistributedModelParallel``; single-process they are real and keep ``build()``'s weights.
    """
    meta = ctx.enabled
    with tables_on("meta" if meta else None):
        model = build()
    return to_torchrec(model, device="meta" if meta else None)  # type: ignore[return-value]


def _embedding_layers(module: nn.Module) -> list[TorchRecFieldEmbedding]:
    return [m for m in module.modules() if isinstance(m, TorchRecFieldEmbedding)]


def _field_tables(module: nn.Module) -> dict[str, str]:
    """Field name → table name of the TorchRec embedding layers (the names a plan is written in)."""
    out: dict[str, str] = {}
    for layer in _embedding_layers(module):
        out.update({f.split(":", 1)[1]: sparse_table_name(i) for i, f in enumerate(layer.sparse_features)})
        out.update({f.split(":", 1)[1]: seq_table_name(i) for i, f in enumerate(layer.seq_features)})
    return out


# ------------------------------------------------------------------------------------------------- plan


def constraints(module: nn.Module, sharding: dict[str, str] | None) -> dict[str, ParameterConstraints] | None:
    """``train.sharding`` (field → type, ``*`` for the rest) as planner constraints keyed by table name."""
    if not sharding:
        return None
    tables = _field_tables(module)
    unknown = sorted(set(sharding) - set(tables) - {"*"})
    if unknown:
        raise ConfigError(f"train.sharding: unknown field(s) {unknown}; id fields: {sorted(tables)}")
    out: dict[str, ParameterConstraints] = {}
    for field, table in tables.items():
        kind = sharding.get(field, sharding.get("*"))
        if kind is not None:
            out[table] = ParameterConstraints(sharding_types=[kind])
    return out


def make_plan(module: nn.Module, config: TrainConfig, ctx: DistContext, device: torch.device) -> ShardingPlan:
    """TorchRec's planner over this machine's ranks, with ``train.sharding`` and ``train.shard_memory_mb``.

    Every rank computes the same plan; ``collective_plan`` makes rank 0's the one used.
    """
    caps: dict[str, int] = {}
    if config.shard_memory_mb:  # the memory the shards live in: GPU memory on CUDA, host memory on CPU
        caps["hbm_cap" if device.type == "cuda" else "ddr_cap"] = config.shard_memory_mb * 2**20
    topology = Topology(
        world_size=ctx.world_size,
        compute_device=device.type,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size)),
        **caps,
    )
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints(module, config.sharding))
    try:
        return planner.collective_plan(module, [CpuRowWiseSharder()], dist.GroupMember.WORLD)
    except PlannerError as e:  # keep the planner's reason (it is long), name the settings that caused it
        reason = " ".join(str(e).split())
        raise ConfigError(f"train.sharding / train.shard_memory_mb: no sharding plan fits: {reason}") from None


def _fused_optimizer(config: TrainConfig, device: torch.device) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    name = config.embedding_optimizer
    if name == "auto":
        name = "adam" if device.type == "cuda" else "adagrad"
    if name == "adam" and device.type != "cuda":
        raise ConfigError("train.embedding_optimizer=adam: fbgemm's CPU kernels have no fused Adam; use adagrad")
    lr = config.embedding_lr if config.embedding_lr is not None else config.lr
    classes = {
        "adam": torch.optim.Adam,
        "adagrad": torch.optim.Adagrad,
        "rowwise_adagrad": trec_optim.RowWiseAdagrad,
        "sgd": torch.optim.SGD,
    }
    kwargs: dict[str, Any] = {"lr": lr}
    if config.embedding_weight_decay:
        kwargs["weight_decay"] = config.embedding_weight_decay
    return classes[name], kwargs


def shard(
    module: TrainingModule, config: TrainConfig, ctx: DistContext, device: torch.device
) -> tuple[DistributedModelParallel, torch.optim.Optimizer]:
    """``module`` under ``DistributedModelParallel`` and the optimiser of its non-fused parameters."""
    cls, kwargs = _fused_optimizer(config, device)
    for layer in _embedding_layers(module):
        if layer.has_tables:
            apply_optimizer_in_backward(cls, list(layer.ebc.parameters()), kwargs)
    plan = make_plan(module, config, ctx, device)
    if ctx.is_main and config.progress:
        print(f"sharding plan:\n{plan}", file=sys.stderr)
    dmp = DistributedModelParallel(
        module,
        device=device,
        plan=plan,
        sharders=[CpuRowWiseSharder()],
        data_parallel_wrapper=DefaultDataParallelWrapper(
            static_graph=False, find_unused_parameters=config.find_unused_parameters
        ),
    )
    dense = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    loss_ids = {id(p) for p in module.loss.parameters()}
    tables = [p for n, p in dense.items() if ".embedding_bags." in n]  # data-parallel tables
    table_ids = {id(p) for p in tables}
    groups = [
        {"params": [p for p in dense.values() if id(p) not in loss_ids | table_ids],
         "lr": config.lr, "weight_decay": config.weight_decay},
        {"params": tables, "lr": config.embedding_lr if config.embedding_lr is not None else config.lr,
         "weight_decay": config.embedding_weight_decay},
        {"params": [p for p in dense.values() if id(p) in loss_ids], "lr": config.lr, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return dmp, opt_cls(groups, lr=config.lr)


# --------------------------------------------------------------------------------------- consolidation


def full_state_dict(dmp: nn.Module, rank: int) -> dict[str, torch.Tensor]:
    """The whole state dict on rank 0 (sharded tensors gathered), ``{}`` elsewhere. Collective."""
    out: dict[str, torch.Tensor] = {}
    for key, value in dmp.state_dict().items():
        if isinstance(value, ShardedTensor):
            full = torch.empty(value.size(), dtype=value.dtype) if rank == 0 else None
            value.gather(dst=0, out=full)
            value = full
        if rank == 0:
            out[key] = value.detach().cpu()
    return out


def load_full_state(dmp: nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Copy a whole (TorchRec-form) state dict into ``dmp``: each rank takes its own shards' rows/columns.

    The inverse of :func:`full_state_dict`; with :func:`~msmtrec.layers.torchrec_embedding.torchrec_state_dict`
    it warm-starts a sharded model from a plain ``model.pt``.
    """
    with torch.no_grad():
        for key, value in dmp.state_dict().items():
            if key not in full:
                raise KeyError(f"load_full_state: {key} missing from the given state")
            if isinstance(value, ShardedTensor):
                for shard in value.local_shards():
                    rows, cols = shard.metadata.shard_offsets
                    n, d = shard.metadata.shard_sizes
                    shard.tensor.copy_(full[key][rows : rows + n, cols : cols + d])
            else:
                value.copy_(full[key])


def model_weights(training_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A :class:`TrainingModule` state dict → the plain ``model.pt`` of its model."""
    return plain_state_dict({k[len("model."):]: v for k, v in training_state.items() if k.startswith("model.")})


def consolidate(run_dir: str | Path) -> Path:
    """Offline: the run's best sharded weights as a plain ``model.pt`` (one process, no process group)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    run_dir = Path(run_dir)
    payload = torch.load(run_dir / STATE_FILE, map_location="cpu", weights_only=True)
    best = payload.get("sharded", {}).get("best")
    if not best:
        raise ConfigError(f"{run_dir}: no sharded best weights in {STATE_FILE}; was it trained with torchrun?")
    tmp = run_dir / SHARDED_DIR / "consolidated.pt"
    dcp_to_torch_save(run_dir / SHARDED_DIR / best, tmp)
    full = torch.load(tmp, map_location="cpu", weights_only=True)
    tmp.unlink()
    io.save_torch(model_weights(full["model"]), run_dir / WEIGHTS)
    return run_dir / WEIGHTS


# -------------------------------------------------------------------------------------------- trainer


class ShardedTrainer(Trainer):
    """:class:`Trainer` for TorchRec-form models: sharded under torchrun, a plain EBC single-process."""

    _dmp: DistributedModelParallel | None = None
    _best_dir: str | None = None

    def _wrap(self, module: TrainingModule) -> tuple[nn.Module, torch.optim.Optimizer]:
        if not _embedding_layers(module):
            raise ConfigError("train.embeddings=torchrec: the model has no FieldEmbedding to shard")
        if not self.ctx.enabled:
            return module.to(self.device), build_optimizer(module, self.config)
        # meta tables stay where they are: DistributedModelParallel allocates this rank's shards on the device
        module._apply(lambda t: t if t.is_meta else t.to(self.device))
        # Each rank fills its shards from the global RNG: distinct streams, or every row-wise shard would
        # start as a copy of the first (data-parallel tables are then broadcast from rank 0 by DDP).
        torch.manual_seed(self.seed * 1_000_003 + 7_919 * (self.ctx.rank + 1))
        if self.run_dir is None:
            raise ConfigError("sharded training needs a run directory for its checkpoints")
        self._dmp, optimizer = shard(module, self.config, self.ctx, self.device)
        self.forward_is_collective = True
        return self._dmp, optimizer

    # ---- evaluation: every rank runs the same number of same-sized batches (the lookups are collective)
    def predict(self, model: nn.Module, dataset: TensorDataset) -> Predictions:
        if not self.ctx.enabled:
            return super().predict(model, dataset)
        part = dataset.shard(self.ctx.rank, self.ctx.world_size)
        n, per_rank = len(part), math.ceil(len(dataset) / self.ctx.world_size)
        pad = per_rank - n
        if pad:  # repeat a row; its predictions are dropped below
            donor = part if n else dataset.subset(torch.zeros(1, dtype=torch.long))
            part = donor.subset(torch.cat([torch.arange(n), torch.full((pad,), max(n - 1, 0))]))
        preds = predict_split(model, part, self.config.eval_batch_size, self.device)
        mine = Predictions(
            outputs={k: v[:n] for k, v in preds.outputs.items()},
            labels=preds.labels[:n],
            scenario=preds.scenario[:n],
            user_id=None if preds.user_id is None else preds.user_id[:n],
        )
        return Predictions.concat(self.ctx.all_gather_object(mine))

    # ---- best weights
    def _save_best(self, model: MultiTaskModel) -> dict[str, torch.Tensor] | None:
        if self._dmp is None:
            best = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            if self.ctx.is_main and self.run_dir is not None:
                io.save_torch(plain_state_dict(best), self.run_dir / WEIGHTS)
            return best
        self._best_dir = self._new_dir("best")
        dcp.save({"model": self._dmp.state_dict()}, checkpoint_id=self._sharded(self._best_dir))
        return None

    def _restore_best(self, model: MultiTaskModel, best_state: dict[str, torch.Tensor] | None) -> None:
        if self._dmp is None:
            super()._restore_best(model, best_state)
            return
        if self._best_dir is None:
            return
        state = {"model": self._dmp.state_dict()}
        dcp.load(state, checkpoint_id=self._sharded(self._best_dir))
        self._dmp.load_state_dict(state["model"])
        if self.config.consolidate and self.run_dir is not None:
            full = full_state_dict(self._dmp, self.ctx.rank)
            if self.ctx.is_main:
                io.save_torch(model_weights(full), self.run_dir / WEIGHTS)
            self.ctx.barrier()

    # ---- resumable state
    def _save_state(
        self,
        module: TrainingModule,
        optimizer: torch.optim.Optimizer,
        state: TrainState,
        best_state: dict[str, torch.Tensor] | None,
        sums: torch.Tensor,
        rows: int,
    ) -> None:
        if self._dmp is None or self.run_dir is None:
            super()._save_state(module, optimizer, state, best_state, sums, rows)
            return
        step_dir = self._new_dir("step")
        dcp.save(
            {"model": self._dmp.state_dict(), "fused": self._dmp.fused_optimizer.state_dict()},
            checkpoint_id=self._sharded(step_dir),
        )
        per_rank = self.ctx.all_gather_object(
            {"rng": {"torch": torch.get_rng_state()}, "sums": sums.detach().cpu().clone(), "rows": rows}
        )
        if self.ctx.is_main:
            payload = {
                "format": 1,
                "seed": self.seed,
                "world_size": self.ctx.world_size,
                "module": None,
                "sharded": {"step": step_dir, "best": self._best_dir},
                "optimizer": optimizer.state_dict(),
                "state": _state_dict(state),
                "best_state": None,
                "per_rank": per_rank,
            }
            io.save_torch(payload, self.run_dir / STATE_FILE)
            self._remove_unnamed({step_dir, self._best_dir})
        self.ctx.barrier()

    def _load_state(
        self, module: TrainingModule, optimizer: torch.optim.Optimizer
    ) -> tuple[TrainState, dict[str, torch.Tensor] | None, torch.Tensor, int]:
        if self._dmp is None:
            return super()._load_state(module, optimizer)
        assert self.run_dir is not None
        payload = torch.load(self.run_dir / STATE_FILE, map_location="cpu", weights_only=True)
        if payload["world_size"] != self.ctx.world_size or payload.get("sharded") is None:
            raise ConfigError(
                f"cannot resume {self.run_dir}: it was trained with {payload['world_size']} process(es) "
                f"({'sharded' if payload.get('sharded') else 'plain'}); this run has {self.ctx.world_size} sharded"
            )
        if payload["seed"] != self.seed:
            raise ConfigError(f"cannot resume {self.run_dir}: seed {self.seed} differs from {payload['seed']}")
        sharded = payload["sharded"]
        saved = {"model": self._dmp.state_dict(), "fused": self._dmp.fused_optimizer.state_dict()}
        dcp.load(saved, checkpoint_id=self._sharded(sharded["step"]))
        self._dmp.load_state_dict(saved["model"])
        self._dmp.fused_optimizer.load_state_dict(saved["fused"])
        optimizer.load_state_dict(payload["optimizer"])
        self._best_dir = sharded["best"]
        mine = payload["per_rank"][self.ctx.rank]
        torch.set_rng_state(mine["rng"]["torch"])
        state = TrainState(**payload["state"])
        return state, None, mine["sums"].double().to(self.device), int(mine["rows"])

    # ---- folders
    def _sharded(self, name: str) -> Path:
        assert self.run_dir is not None
        return self.run_dir / SHARDED_DIR / name

    def _new_dir(self, kind: str) -> str:
        """A fresh folder name, the same on every rank (rank 0's clock)."""
        return self.ctx.broadcast_object(f"{kind}-{time.time_ns()}")

    def _remove_unnamed(self, keep: set[str | None]) -> None:
        root = self.run_dir / SHARDED_DIR if self.run_dir is not None else None
        if root is None or not root.exists():
            return
        for path in root.iterdir():
            if path.is_dir() and path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m msmtrec.training.sharding consolidate RUN``: write RUN/model.pt from the sharded best."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "consolidate":
        print("usage: python -m msmtrec.training.sharding consolidate RUN_DIR", file=sys.stderr)
        return 2
    print(consolidate(args[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
