"""The trainer: any registered model, any splits, single-process or DDP, resumable to the exact batch.

``Trainer.fit(model, splits)`` only reads ``splits["train"]`` and ``splits["valid"]`` — the test split is
never seen while training, so early stopping cannot leak it. It knows nothing about how the data was
prepared, so tests feed it planted data and the CLI feeds it the pipeline's splits.

Exact resume: everything that influences the next step is in ``last.pt`` — model and loss parameters,
optimiser moments, the position (epoch, batch in epoch), the per-rank torch RNG states (dropout), the
per-rank running loss sums, early-stopping state and history. The shuffle order needs no state: it is
a pure function of ``(seed, epoch)`` and :meth:`TensorDataset.batches` skips to ``start_batch``. So a run
killed with ``kill -9`` and resumed ends with the same weights and metrics as one never interrupted.

Under ``torchrun`` each rank trains on its own equal-sized shard of the training split with
``ceil(batch_size / world_size)`` rows per step (DDP averages gradients, so the global step matches a
single-process step), validation is sharded and the predictions gathered so every rank takes the same
early-stopping decision, and only rank 0 writes files.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from msmtrec.data.dataset import TensorDataset
from msmtrec.data.schema import Batch, Schema
from msmtrec.errors import ConfigError
from msmtrec.models.base import MultiTaskModel
from msmtrec.runs import STATE, WEIGHTS, load_checkpoint, load_weights
from msmtrec.tasks import OutputMapping, kind_of
from msmtrec.training import io
from msmtrec.training.adam import FusedAdam
from msmtrec.training.balancing import make_balancer
from msmtrec.training.config import TrainConfig
from msmtrec.training.distributed import DistContext, resolve_device
from msmtrec.training.loss import MultiTaskLoss, sampling_offsets, scenario_weights
from msmtrec.training.metrics import Predictions, compute_metrics, monitor_value, predict_split
from msmtrec.training.tracking import open_tracker, sample_batch

if TYPE_CHECKING:  # streaming needs pandas/pyarrow; in-memory training should not import them
    from msmtrec.data.stream import ParquetStream

TrainSplit: TypeAlias = "TensorDataset | ParquetStream"
"""The training split: in memory, or streamed from Parquet row groups (larger than memory)."""

STATE_FILE = STATE
MODEL_FILE = WEIGHTS
_STATE_KEYS = {"world_size", "seed", "module", "optimizer", "state", "best_state", "per_rank"}
HISTORY_FILE = "history.csv"


def seed_everything(seed: int) -> None:
    """Seed every RNG a model or the trainer may draw from (python, numpy, torch CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def embedding_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The model's embedding tables, which get their own learning rate and weight decay.

    A model may say which they are with ``embedding_parameters()``; otherwise any submodule that offers
    that method (e.g. :class:`~msmtrec.layers.FieldEmbedding`) and every ``nn.Embedding`` count.
    """
    own = getattr(model, "embedding_parameters", None)
    if callable(own):
        return list(own())
    found: dict[int, nn.Parameter] = {}
    for m in model.modules():
        sub = getattr(m, "embedding_parameters", None)
        if callable(sub):
            found.update({id(p): p for p in sub()})
        if isinstance(m, nn.Embedding):
            found[id(m.weight)] = m.weight
    return list(found.values())


class TrainingModule(nn.Module):
    """Model + loss as one module, so DDP also averages the gradients of loss parameters (log-variances)."""

    def __init__(self, model: MultiTaskModel, loss: MultiTaskLoss) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(batch)
        total, per_task = self.loss(out, batch["labels"], batch["scenario"])
        # regularization_loss reads values cached by this forward pass, so it must come right after it.
        return total + self.model.regularization_loss(), per_task


def build_optimizer(module: TrainingModule, config: TrainConfig) -> torch.optim.Optimizer | FusedAdam:
    """Adam/AdamW with parameter groups: dense layers, embedding tables, loss parameters (no decay)."""
    emb = [p for p in embedding_parameters(module.model) if p.requires_grad]
    emb_ids = {id(p) for p in emb}
    loss_params = [p for p in module.loss.parameters() if p.requires_grad]
    dense = [p for p in module.model.parameters() if p.requires_grad and id(p) not in emb_ids]
    groups = [
        {"name": "dense", "params": dense, "lr": config.lr, "weight_decay": config.weight_decay},
        {
            "name": "embedding",
            "params": emb,
            "lr": config.embedding_lr if config.embedding_lr is not None else config.lr,
            "weight_decay": config.embedding_weight_decay,
        },
        {"name": "loss", "params": loss_params, "lr": config.lr, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    # The fused kernel updates every tensor in one pass, which matters on CPU, where the optimiser step over
    # large embedding tables is a sizeable share of a training step (figures: docs/changelog.md).
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    if fused:
        # Same kernel, bit-identical steps, without torch.optim's ~1.2 s import of torch._dynamo.
        return FusedAdam(groups, lr=config.lr, decoupled=config.optimizer == "adamw")
    return cls(groups, lr=config.lr, fused=fused)


@dataclass
class TrainState:
    """Where training stands; saved whole (plus RNG and parameters) in ``last.pt``."""

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    samples_seen: int = 0


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` hands back; ``model`` carries the best validation weights."""

    model: MultiTaskModel
    best_epoch: int
    """Index into ``history`` (0-based) of the validation pass whose weights were kept: the epoch, unless
    ``evals_per_epoch`` > 1; :attr:`kept_at` says when in epochs, as outputs count them."""
    best_score: float
    epochs: int
    history: list[dict[str, Any]]
    train_seconds: float
    samples_per_second: float
    valid_metrics: dict[str, Any]

    @property
    def kept_at(self) -> float:
        """Epochs of data seen when the kept weights were validated, 1-based as printed and in history.csv
        (3 = end of the third epoch; 2.5 = half-way through it with ``evals_per_epoch`` 2)."""
        return self.history[self.best_epoch]["epoch"]  # fit validates at least once


@dataclass
class _Fit:
    """The working set of one :meth:`Trainer.fit` call, passed between its named steps."""

    model: MultiTaskModel
    loss: MultiTaskLoss
    module: TrainingModule
    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    balancer: Any
    tracker: Any
    gate_sample: Batch | None
    train: TrainSplit
    valid: TensorDataset
    batch_size: int
    n_batches: int
    base_lrs: list[float]
    scheduled: bool
    sums: torch.Tensor
    rows: int = 0
    state: TrainState = field(default_factory=TrainState)
    best_state: dict[str, torch.Tensor] | None = None
    valid_metrics: dict[str, Any] = field(default_factory=dict)
    steps_here: int = 0
    marks: frozenset[int] = frozenset()
    """Batches of an epoch after which a validation pass runs inside it (``evals_per_epoch`` > 1)."""
    on_check: Callable[[int, float], None] | None = None
    seconds_before: float = 0.0
    segment_start: float = 0.0

    def elapsed(self) -> float:
        """Training seconds of the whole run, across resumes."""
        return self.seconds_before + time.perf_counter() - self.segment_start


class Trainer:
    """Fits a :class:`MultiTaskModel` with early stopping on the validation split.

    ``run_dir`` (rank 0 writes it) receives ``model.pt`` (best weights), ``last.pt`` (resumable state)
    and ``history.csv``; without it nothing is written, which is what unit tests want.
    """

    def __init__(
        self,
        config: TrainConfig | None = None,
        seed: int = 0,
        run_dir: str | Path | None = None,
        ctx: DistContext | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.seed = seed
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.ctx = ctx or DistContext()
        self.device = torch.device(device) if device is not None else resolve_device(self.config.device, self.ctx)

    # ------------------------------------------------------------------ evaluation
    def predict(self, model: nn.Module, dataset: TensorDataset) -> Predictions:
        """Predictions over the whole ``dataset``; under DDP each rank predicts a shard and all gather."""
        if not self.ctx.enabled:
            return predict_split(model, dataset, self.config.eval_batch_size, self.device)
        part = predict_split(
            model, dataset.shard(self.ctx.rank, self.ctx.world_size), self.config.eval_batch_size, self.device
        )
        return Predictions.concat(self.ctx.all_gather_object(part))

    def evaluate(self, model: MultiTaskModel, dataset: TensorDataset) -> dict[str, Any]:
        """Metrics of ``dataset`` (see :mod:`msmtrec.training.metrics`); identical on every rank."""
        return compute_metrics(model.schema, self.predict(model, dataset), model.output_mapping)

    # ------------------------------------------------------------------ training
    forward_is_collective = False
    """True when a forward pass needs every rank (sharded tables): no rank-0-only passes then."""
    after_step: Callable[[TrainState], None] | None = None
    """Called after every optimiser step (and any checkpoint due) with the state; ``None`` in normal use.
    Tests of exact resume inject a SIGKILL here from their own launcher (``tests/kill_after.py``)."""

    def fit(
        self,
        model: MultiTaskModel,
        splits: dict[str, TrainSplit],
        resume: bool = False,
        on_epoch: Callable[[int, float], None] | None = None,
    ) -> FitResult:
        """Train ``model`` in place on ``splits["train"]``, early-stop on ``splits["valid"]``.

        With ``resume`` the state in ``run_dir/last.pt`` is loaded first and training continues from the
        exact step it describes. ``on_epoch(epoch, monitor_score)`` is called after each validation pass
        (the tuner reports to its pruner there; with ``evals_per_epoch`` > 1 the first argument counts
        validation passes); an exception it raises ends training and propagates.

        The named steps: :meth:`_prepare` (loss, optimiser, balancer, tracker, state) → per epoch
        :meth:`_train_epoch` (which calls :meth:`_train_step` per batch, and :meth:`_validate` at the
        ``evals_per_epoch`` marks inside the epoch) and :meth:`_end_epoch` (the epoch's last validation, then
        the epoch's bookkeeping) → :meth:`_finish`.
        """
        for name in ("train", "valid"):
            if name not in splits or len(splits[name]) == 0:
                raise ConfigError(f"training needs a non-empty {name!r} split")
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        run = self._prepare(model, splits["train"], splits["valid"], resume)
        run.on_check = on_epoch
        while not run.state.finished and run.state.epoch < self.config.max_epochs:
            speed = self._train_epoch(run)
            if not run.state.finished:  # a validation inside the epoch may have ended training
                self._end_epoch(run, speed)
        return self._finish(run)

    def _prepare(self, model: MultiTaskModel, train_full: TrainSplit, valid: TensorDataset, resume: bool) -> _Fit:
        """Everything one fit needs, built once: the loss, the wrapped module, optimiser, balancer, tracker, state."""
        cfg, ctx = self.config, self.ctx
        schema = model.schema
        train, batch_size = self._local_train(train_full)
        n_batches = train.num_batches(batch_size)
        sw = scenario_weights(None, schema.num_scenarios, cfg.scenario_weighting, _scenario_counts(train_full, schema))
        weights = cfg.task_weight_vector(schema.task_names, [t.weight for t in schema.tasks])
        cfg.check_sampling(list(schema.tasks))
        loss = MultiTaskLoss(schema, weights, cfg.loss_weighting, sw, cfg.positive_weight, cfg.negative_sampling)
        model.output_mapping = OutputMapping(schema, sampling_offsets(cfg, schema))  # exact re-calibration
        module = TrainingModule(model, loss)
        wrapped, optimizer = self._wrap(module)
        balancer = make_balancer(cfg.loss_weighting, loss, model, ctx.enabled, cfg.gradnorm_alpha, cfg.gradnorm_lr,
                                 cfg.dwa_temperature)
        tracker = open_tracker(cfg, self.run_dir, ctx.is_main)  # TensorBoard / MLflow (rank 0, with a run_dir)
        tracker.log_run(model, cfg, self.seed)
        # gate summaries run a forward pass on rank 0 alone, which a sharded model cannot do (lookups are collective)
        gate_sample = sample_batch(valid, self.device) if tracker.active and not self.forward_is_collective else None
        run = _Fit(
            model=model, loss=loss, module=module, wrapped=wrapped, optimizer=optimizer, balancer=balancer,
            tracker=tracker, gate_sample=gate_sample, train=train, valid=valid, batch_size=batch_size,
            n_batches=n_batches,
            marks=_validation_marks(n_batches, cfg.evals_per_epoch),
            base_lrs=[g["lr"] for g in optimizer.param_groups],  # before a resume loads scheduled rates
            scheduled=cfg.lr_schedule != "constant" or cfg.warmup_steps > 0,
            # running sums of [per-task loss..., total loss] × rows, and the rows, for this epoch on this rank
            # (kept on the training device so the hot loop never waits for a device-to-host copy)
            sums=torch.zeros(len(schema.tasks) + 1, dtype=torch.float64, device=self.device),
        )
        if resume:
            run.state, run.best_state, run.sums, run.rows = self._load_state(module, optimizer)
        else:
            # Distinct dropout streams per rank; the model was already built (and broadcast by DDP).
            torch.manual_seed(self.seed * 1_000_003 + ctx.rank)
        run.seconds_before = run.state.train_seconds
        run.segment_start = time.perf_counter()
        return run

    def _train_epoch(self, run: _Fit) -> float:
        """One pass over this rank's training rows from where the state stands; returns training rows/s."""
        cfg, ctx, state = self.config, self.ctx, run.state
        run.module.train()
        bar = tqdm(
            total=run.n_batches,
            initial=state.batch_in_epoch,
            desc=f"epoch {state.epoch + 1}/{cfg.max_epochs}",
            disable=not (cfg.progress and ctx.is_main and _is_terminal(sys.stderr)),  # log files get lines
            dynamic_ncols=True,
            unit="batch",
        )
        bar_start, bar_rows = time.perf_counter(), 0
        batches = run.train.batches(
            run.batch_size, shuffle=True, seed=self.seed, epoch=state.epoch, start_batch=state.batch_in_epoch
        )
        for batch in batches:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            total, per_task = self._train_step(run, batch)
            n = int(batch["labels"].shape[0])
            run.sums += torch.cat([per_task.detach(), total.detach().reshape(1)]).double() * n
            run.rows += n
            bar_rows += n * ctx.world_size
            state.samples_seen += n * ctx.world_size
            state.batch_in_epoch += 1
            state.global_step += 1
            run.steps_here += 1
            run.tracker.step(state.global_step, per_task, total, n * ctx.world_size, run.optimizer,
                             run.model.task_names)
            if bar.disable is False and (state.batch_in_epoch % 10 == 0 or state.batch_in_epoch == run.n_batches):
                mean = (run.sums / max(run.rows, 1)).tolist()
                post = {name: f"{mean[i]:.4f}" for i, name in enumerate(run.model.task_names)}
                post["samples/s"] = f"{bar_rows / max(time.perf_counter() - bar_start, 1e-9):,.0f}"
                bar.set_postfix(post, refresh=False)
            bar.update(1)
            validated = state.batch_in_epoch in run.marks
            if validated:  # a pass inside the epoch; it writes its own checkpoint
                self._validate(run, bar_rows / max(time.perf_counter() - bar_start, 1e-9), end_of_epoch=False)
                if state.finished:
                    break
            if cfg.checkpoint_every and state.global_step % cfg.checkpoint_every == 0 and not validated:
                self._checkpoint(run)
            if self.after_step is not None:
                bar.close()
                self.after_step(state)
        bar.close()
        return bar_rows / max(time.perf_counter() - bar_start, 1e-9)  # training rows/s, before validation

    def _train_step(self, run: _Fit, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, backward (or the balancer's), clipping, the scheduled rate and the optimiser step."""
        cfg = self.config
        total, per_task = run.wrapped(batch)
        run.optimizer.zero_grad(set_to_none=True)
        if run.balancer is None:
            total.backward()
        else:
            run.balancer.backward(total)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(run.module.parameters(), cfg.grad_clip)
        if run.scheduled:
            factor = cfg.lr_factor(run.state.global_step, run.n_batches)
            for group, base in zip(run.optimizer.param_groups, run.base_lrs, strict=True):
                group["lr"] = base * factor
        run.optimizer.step()
        return total, per_task

    def _end_epoch(self, run: _Fit, speed: float) -> float:
        """The epoch's last validation pass, with the epoch's bookkeeping; returns the monitored score."""
        return self._validate(run, speed, end_of_epoch=True)

    def _validate(self, run: _Fit, speed: float, end_of_epoch: bool) -> float:
        """Pooled training loss so far this epoch, validation, early stopping, history, log line and checkpoint.

        At an epoch's end it also closes the epoch (balancer update, counters, loss sums). ``best_epoch`` and
        ``bad_epochs`` count validation passes, which are epochs unless ``evals_per_epoch`` > 1."""
        cfg, ctx, state = self.config, self.ctx, run.state
        epoch, n_tasks = state.epoch, len(run.model.task_names)
        pooled = ctx.all_gather_object((run.sums.cpu(), run.rows))
        all_sums = sum((s for s, _ in pooled), torch.zeros(n_tasks + 1, dtype=torch.float64))
        all_rows = sum(r for _, r in pooled)
        mean_loss = (all_sums / max(all_rows, 1)).tolist()
        if end_of_epoch and run.balancer is not None:
            run.balancer.end_epoch(mean_loss[:n_tasks])
        run.valid_metrics = self.evaluate(run.model, run.valid)
        score = monitor_value(run.valid_metrics, cfg.monitor)
        check = len(state.history)
        improved = state.best_epoch < 0 or score > state.best_score + cfg.min_delta
        if improved:
            state.best_score, state.best_epoch, state.bad_epochs = score, check, 0
            run.best_state = self._save_best(run.model)
        else:
            state.bad_epochs += 1
        seen = epoch + 1 if end_of_epoch else round(epoch + state.batch_in_epoch / run.n_batches, 4)
        state.history.append(self._history_row(seen, mean_loss, run.valid_metrics, score, run.loss, run.model))
        run.tracker.epoch(check, state.history[-1], run.valid_metrics, run.model, run.gate_sample)
        if end_of_epoch:
            state.epoch, state.batch_in_epoch = epoch + 1, 0
            run.sums, run.rows = torch.zeros_like(run.sums), 0
        if state.bad_epochs >= max(cfg.patience, 1) or state.epoch >= cfg.max_epochs:
            state.finished = True
        if ctx.is_main and cfg.log_epochs:
            tqdm.write(self._epoch_line(state.history[-1], improved, cfg.max_epochs, speed), file=sys.stderr)
            sys.stderr.flush()
        self._checkpoint(run)
        if ctx.is_main and self.run_dir is not None:
            io.save_history_csv(state.history, self.run_dir / HISTORY_FILE)
        if run.on_check is not None:
            run.on_check(check, score)
        return score

    def _checkpoint(self, run: _Fit) -> None:
        run.state.train_seconds = run.elapsed()
        self._save_state(run.module, run.optimizer, run.state, run.best_state, run.sums, run.rows)

    def _finish(self, run: _Fit) -> FitResult:
        """Close the tracker, put the best weights back and report."""
        run.tracker.close()
        self._restore_best(run.model, run.best_state)
        state = run.state
        train_seconds = run.elapsed() if run.steps_here else state.train_seconds
        return FitResult(
            model=run.model,
            best_epoch=state.best_epoch,
            best_score=state.best_score,
            epochs=state.epoch,
            history=state.history,
            train_seconds=train_seconds,
            samples_per_second=state.samples_seen / train_seconds if train_seconds > 0 else 0.0,
            valid_metrics=run.valid_metrics,
        )

    def _wrap(self, module: TrainingModule) -> tuple[nn.Module, torch.optim.Optimizer]:
        """``module`` on the device, the module the loop calls (DDP under torchrun) and the optimiser."""
        module.to(self.device)
        optimizer = build_optimizer(module, self.config)
        if not self.ctx.enabled:
            return module, optimizer
        wrapped = DistributedDataParallel(
            module,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=self.config.find_unused_parameters,
        )
        return wrapped, optimizer

    def _save_best(self, model: MultiTaskModel) -> dict[str, torch.Tensor] | None:
        """Keep the best weights (returned, and saved with ``last.pt``) and write ``model.pt`` (rank 0)."""
        best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if self.ctx.is_main and self.run_dir is not None:
            io.save_torch(best_state, self.run_dir / MODEL_FILE)
        return best_state

    def _restore_best(self, model: MultiTaskModel, best_state: dict[str, torch.Tensor] | None) -> None:
        """Put the best weights back into ``model`` at the end of :meth:`fit`."""
        if best_state is not None:
            model.load_state_dict(best_state)

    def _local_train(self, train_full: TrainSplit) -> tuple[TrainSplit, int]:
        """This rank's training shard and per-rank batch size.

        Shards are cut to the same length so every rank runs the same number of steps (DDP needs every
        rank in every all-reduce); at most ``world_size - 1`` rows are dropped.
        """
        ctx = self.ctx
        if not ctx.enabled:
            return train_full, self.config.batch_size
        if not isinstance(train_full, TensorDataset):
            # A stream shards whole row groups and cuts every shard to the same length by itself.
            return train_full.shard(ctx.rank, ctx.world_size), math.ceil(self.config.batch_size / ctx.world_size)
        per_rank = len(train_full) // ctx.world_size
        shard = train_full.shard(ctx.rank, ctx.world_size)
        if len(shard) > per_rank:
            shard = shard.subset(torch.arange(per_rank))
        return shard, math.ceil(self.config.batch_size / ctx.world_size)

    # ------------------------------------------------------------------ state files
    def _save_state(
        self,
        module: TrainingModule,
        optimizer: torch.optim.Optimizer | FusedAdam,
        state: TrainState,
        best_state: dict[str, torch.Tensor] | None,
        sums: torch.Tensor,
        rows: int,
    ) -> None:
        """Write ``last.pt`` atomically (rank 0). Collective under DDP: every rank sends its RNG and sums."""
        if self.run_dir is None:
            return
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        per_rank = self.ctx.all_gather_object({"rng": rng, "sums": sums.detach().cpu().clone(), "rows": rows})
        if not self.ctx.is_main:
            return
        payload = {
            "format": 1,
            "seed": self.seed,
            "world_size": self.ctx.world_size,
            "module": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "state": _state_dict(state),
            "best_state": best_state,
            "per_rank": per_rank,
        }
        io.save_torch(payload, self.run_dir / STATE_FILE)

    def _load_state(
        self, module: TrainingModule, optimizer: torch.optim.Optimizer | FusedAdam
    ) -> tuple[TrainState, dict[str, torch.Tensor] | None, torch.Tensor, int]:
        if self.run_dir is None or not (self.run_dir / STATE_FILE).exists():
            raise ConfigError(f"cannot resume: no {STATE_FILE} in {self.run_dir}")
        path = self.run_dir / STATE_FILE
        payload = load_checkpoint(path)
        if not isinstance(payload, dict) or not _STATE_KEYS <= set(payload):
            raise ConfigError(f"{path}: not an msmtrec training state (expected the last.pt `msmtrec train` writes)")
        if payload["world_size"] != self.ctx.world_size:
            raise ConfigError(
                f"cannot resume {self.run_dir}: it was trained with {payload['world_size']} process(es), "
                f"this run has {self.ctx.world_size}; use the same torchrun --nproc_per_node"
            )
        if payload["seed"] != self.seed:
            raise ConfigError(f"cannot resume {self.run_dir}: seed {self.seed} differs from {payload['seed']}")
        load_weights(module, payload["module"], path)
        try:
            optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError) as e:
            raise ConfigError(f"{path}: optimizer state does not match this run's optimizer ({e})") from None
        mine = payload["per_rank"][self.ctx.rank]
        torch.set_rng_state(mine["rng"]["torch"])
        if "cuda" in mine["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["rng"]["cuda"], self.device)
        state = TrainState(**payload["state"])
        return state, payload["best_state"], mine["sums"].double().to(self.device), int(mine["rows"])

    # ------------------------------------------------------------------ reporting
    @staticmethod
    def _history_row(
        seen: float,
        mean_loss: list[float],
        metrics: dict[str, Any],
        score: float,
        loss: MultiTaskLoss,
        model: MultiTaskModel,
    ) -> dict[str, Any]:
        names = model.schema.task_names
        # epochs of data seen, as printed: 1, 2, ... (1.5 for a validation half-way through the second epoch)
        row: dict[str, Any] = {"epoch": seen, "train_loss": mean_loss[-1]}
        row.update({f"train_loss/{n}": mean_loss[i] for i, n in enumerate(names)})
        if loss.log_var is not None:
            row.update({f"log_var/{n}": float(v) for n, v in zip(names, loss.log_var.detach().cpu(), strict=True)})
        if loss.weighting in ("gradnorm", "dwa"):
            row.update({f"balance/{n}": float(v) for n, v in zip(names, loss.balance.cpu(), strict=True)})
        row["valid/monitor"] = score if math.isfinite(score) else None
        for key in ("mean_auc", "weighted_auc", "mean_gauc", "mean_logloss", "mean_rmse"):
            row[f"valid/{key}"] = metrics.get(key)
        for task in model.schema.tasks:
            keys = kind_of(task).history_keys
            for k in keys:
                row[f"valid/{task.name}/{k}"] = metrics["overall"][task.name].get(k)
            for scen, cells in metrics.get("by_scenario", {}).items():  # per-scenario curves (msmtrec plot)
                for k in keys:
                    row[f"valid/{scen}/{task.name}/{k}"] = cells.get(task.name, {}).get(k)
        return row

    @staticmethod
    def _epoch_line(row: dict[str, Any], improved: bool, max_epochs: int | None = None, speed: float = 0.0) -> str:
        losses = " ".join(
            f"{k.split('/', 1)[1]}={v:.4f}" for k, v in row.items() if k.startswith("train_loss/")
        )
        mon = row["valid/monitor"]
        mark = " *" if improved else ""
        mon_s = "-" if mon is None else f"{mon:.4f}"
        of = f"/{max_epochs}" if max_epochs else ""
        rate = f" | {speed:,.0f} samples/s" if speed > 0 else ""
        seen = row["epoch"]
        seen_s = str(seen) if float(seen).is_integer() else f"{seen:.2f}"  # 2.25: a pass inside the third epoch
        return f"epoch {seen_s}{of}: train loss {losses} | valid monitor {mon_s}{mark}{rate}"


def _validation_marks(n_batches: int, evals_per_epoch: int) -> frozenset[int]:
    """Batch counts inside an epoch after which to validate: ``evals_per_epoch - 1`` evenly spaced ones (the
    last pass is the epoch's end); fewer when the epoch has fewer batches than passes."""
    marks = {round(k * n_batches / evals_per_epoch) for k in range(1, evals_per_epoch)}
    return frozenset(m for m in marks if 0 < m < n_batches)


def _is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal: a redrawn bar there, plain lines in a log file or pipe."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


def _scenario_counts(split: TrainSplit, schema: Schema) -> torch.Tensor:
    """Rows per scenario of a training split: counted in memory, or from a stream's scenario scan."""
    if isinstance(split, TensorDataset):
        return torch.bincount(split.tensors["scenario"].long(), minlength=schema.num_scenarios)
    return split.scenario_counts()


def _state_dict(state: TrainState) -> dict[str, Any]:
    return {
        "epoch": state.epoch,
        "batch_in_epoch": state.batch_in_epoch,
        "global_step": state.global_step,
        "best_score": state.best_score,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        "finished": state.finished,
        "history": state.history,
        "train_seconds": state.train_seconds,
        "samples_seen": state.samples_seen,
    }
