"""Trainer settings: one typed dataclass, so YAML ``train:`` sections and ``--set train.x=v`` are checked.

Defaults are chosen to work on the shipped data (Hillstrom, ~64k rows): a 1024-row batch, Adam at 1e-3,
up to 10 epochs with early stopping after 2 epochs without validation improvement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from msmtrec.errors import ConfigError

OPTIMIZERS = ("adam", "adamw")
LOSS_WEIGHTINGS = ("fixed", "uncertainty", "gradnorm", "pcgrad", "dwa")
SCENARIO_WEIGHTINGS = ("none", "inverse_frequency", "sqrt_inverse")
MONITORS = ("auto", "mean_auc", "weighted_auc", "mean_gauc", "mean_logloss", "mean_rmse")
DEVICES = ("auto", "cpu", "cuda")
EMBEDDINGS = ("plain", "torchrec")
EMBEDDING_OPTIMIZERS = ("auto", "adam", "adagrad", "rowwise_adagrad", "sgd")
SHARDING_TYPES = ("table_wise", "row_wise", "column_wise", "table_row_wise", "data_parallel")
TRACKERS = ("none", "mlflow")
CALIBRATIONS = ("none", "platt", "isotonic")
LR_SCHEDULES = ("constant", "cosine", "step")


@dataclass
class TrainConfig:
    """Everything the trainer needs besides the model, the data and the seed."""

    batch_size: int = 1024
    """Global batch size: under ``torchrun`` each of N ranks takes ``ceil(batch_size / N)`` rows per step,
    so a distributed run takes the same optimiser steps as a single-process one."""
    max_epochs: int = 10
    """Upper bound on epochs; early stopping usually ends training sooner."""
    patience: int = 2
    """Validation passes without an improvement (by more than ``min_delta``) before stopping: epochs, unless
    ``evals_per_epoch`` validates more often."""
    evals_per_epoch: int = 1
    """Validation passes per epoch, spread evenly over its batches, the last at the epoch's end. Each pass
    may keep the weights, counts toward ``patience`` and adds a ``history.csv`` row whose ``epoch`` is the
    share of the data seen so far (1.5 = half-way through the second epoch). Why: with user and item id
    fields models often peak inside their second epoch and overfit after it (docs/benchmarks.md, synthetic
    suite); a pass at the end of each epoch only can keep neither the peak nor the weights just before it.
    FuxiCTR's ``eval_steps`` answers the same need."""
    min_delta: float = 0.0
    """Smallest change of the monitored value that counts as an improvement."""
    monitor: str = "auto"
    """Validation value to select the best epoch: ``auto`` (mean AUC over scenario × binary-task cells,
    or mean RMSE when no task is binary), ``mean_auc``, ``weighted_auc`` (the same cells weighted by their
    validation positives, so small cells cannot pick the epoch; the benchmark suites' default),
    ``mean_gauc``, ``mean_logloss``, ``mean_rmse``."""
    optimizer: str = "adam"
    """``adam`` (weight decay is a classic coupled L2 penalty) or ``adamw`` (decoupled weight decay)."""
    lr: float = 1e-3
    """Learning rate of every non-embedding parameter."""
    weight_decay: float = 0.0
    """L2 / weight decay of every non-embedding parameter."""
    embedding_lr: float | None = None
    """Learning rate of the embedding tables (``None``: same as ``lr``). Sparse rows see few updates,
    which is why they often want a different rate than the dense layers."""
    embedding_weight_decay: float = 0.0
    """L2 / weight decay of the embedding tables."""
    grad_clip: float = 5.0
    """Clip the global gradient norm to this value; 0 turns clipping off."""
    loss_weighting: str = "fixed"
    """``fixed`` (per-task weights), ``uncertainty`` (Kendall et al., 2018: learned log-variances, still
    multiplied by the per-task weights), or a balancer of :mod:`msmtrec.training.balancing`: ``gradnorm``
    (Chen et al., 2018), ``pcgrad`` (Yu et al., 2020, gradient surgery) or ``dwa`` (Liu et al., 2019)."""
    gradnorm_alpha: float = 1.5
    """GradNorm's asymmetry α: how strongly a task that trains slower than the others gains weight."""
    gradnorm_lr: float = 0.025
    """Step size of GradNorm's task-weight update (weights are renormalised to sum to the task count)."""
    dwa_temperature: float = 2.0
    """DWA's temperature τ (the paper's 2); larger spreads the weights less."""
    task_weights: dict[str, float] | None = None
    """Per-task loss weights; tasks not named keep ``Task.weight`` from the schema. From ``--set`` write
    ``train.task_weights=click:1,conversion:2``."""
    scenario_weighting: str = "none"
    """Per-sample weights against scenario imbalance: ``none``, ``inverse_frequency`` or ``sqrt_inverse``
    (normalised so the mean sample weight over the training split is 1)."""
    positive_weight: dict[str, float] | None = None
    """Per binary task, the loss weight of positive rows (``train.positive_weight=buy:5``). The learned odds
    grow by that factor; the output mapping removes it exactly (logit − log w)."""
    negative_sampling: dict[str, float] | None = None
    """Per binary task, the rate ``r`` in (0, 1] at which negative rows are kept in its loss term (for very
    low positive rates; ``train.negative_sampling=buy:0.1``). Other tasks keep every row. Probabilities are
    re-calibrated exactly: p = q / (q + (1 − q) / r)."""
    calibration: str = "none"
    """Post-hoc calibration fitted per scenario on the validation split after training: ``none``, ``platt``
    or ``isotonic`` (binary tasks; ``ziln`` tasks get a per-scenario mean scale). Stored in the run's
    ``output_mapping.json`` and applied by predict, export runtimes and the service."""
    lr_schedule: str = "constant"
    """``constant``, ``cosine`` (to ``lr · min_lr_ratio`` at the last step of ``max_epochs``) or ``step``
    (× ``lr_gamma`` every ``lr_step_epochs`` epochs); any of them after ``warmup_steps`` of linear warm-up."""
    warmup_steps: int = 0
    """Optimiser steps of linear learning-rate warm-up from ~0 to ``lr``."""
    lr_step_epochs: int = 1
    """Epochs between two decays of the ``step`` schedule."""
    lr_gamma: float = 0.5
    """Decay factor of the ``step`` schedule."""
    min_lr_ratio: float = 0.0
    """Final learning rate of the ``cosine`` schedule, as a fraction of ``lr``."""
    eval_batch_size: int = 8192
    """Rows per forward pass when evaluating (no gradients, so larger than the training batch)."""
    checkpoint_every: int = 100
    """Write the resumable ``last.pt`` every this many optimiser steps (and always at epoch end); 0: only
    at epoch end."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    progress: bool = True
    """Show the tqdm progress bar (rank 0, and only when stderr is a terminal: a log file gets no bar)."""
    log_epochs: bool = True
    """Print one plain line per epoch (rank 0): train loss per task, validation monitor, samples/s. Kept
    with ``progress=false``; this is what a log file shows."""
    num_threads: int = 1
    """Intra-op CPU threads for torch ops in this process (0: torch's default, one per core). One thread
    never collapses on a busy host; more threads gain little on small CPUs (see docs/training.md)."""
    tensorboard: bool = True
    """Write TensorBoard event files to ``RUN_DIR/tensorboard/`` (see :mod:`msmtrec.training.tracking`)."""
    tracking: str = "none"
    """Also record the run to an experiment tracker: ``none`` or ``mlflow`` (params, metrics, the run folder)."""
    mlflow_uri: str | None = None
    """MLflow tracking URI (``None``: ``MLFLOW_TRACKING_URI``, else MLflow's default ``sqlite:///mlflow.db``)."""
    log_every: int = 50
    """Optimiser steps between per-step records (loss per task, learning rate, samples/s)."""
    find_unused_parameters: bool = True
    """Passed to DistributedDataParallel; models with branches unused by some batches need it."""
    embeddings: str = "plain"
    """Form of the embedding tables: ``plain`` (every rank holds every table) or ``torchrec`` (TorchRec
    tables; under ``torchrun`` sharded across ranks by ``DistributedModelParallel``; needs the
    ``msmtrec[torchrec]`` extra). The model is the same either way; ``model.pt`` is always the plain form."""
    sharding: dict[str, str] | None = None
    """With ``embeddings=torchrec``: an explicit plan, id field → sharding type (``table_wise``, ``row_wise``,
    ``column_wise``, ``table_row_wise``, ``data_parallel``); ``*`` sets the rest. ``None``: TorchRec's planner
    chooses. From ``--set`` write ``train.sharding=user_id:row_wise,*:data_parallel``."""
    shard_memory_mb: int = 0
    """With ``embeddings=torchrec`` and the planner: host memory per rank (MiB) the plan may fill with table
    shards and their optimiser state; a plan that cannot fit fails before training. 0: TorchRec's default."""
    embedding_optimizer: str = "auto"
    """Optimiser of sharded tables, applied inside the backward pass by TorchRec's fused kernels: ``adam``,
    ``adagrad`` (exact), ``rowwise_adagrad`` or ``sgd``. ``auto``: adam on CUDA, adagrad on CPU, where fbgemm's
    CPU kernels have no Adam. Its rate is ``embedding_lr`` (or ``lr``). Plain and data-parallel tables keep
    the dense optimiser."""
    consolidate: bool = True
    """With ``embeddings=torchrec`` under torchrun: gather the best sharded weights into a plain ``model.pt``
    at the end (needs the whole model in rank 0's memory once); without it only the sharded checkpoint is
    written and ``python -m msmtrec.training.sharding consolidate RUN`` converts it later."""

    def __post_init__(self) -> None:
        if isinstance(self.task_weights, str):
            self.task_weights = _parse_weights(self.task_weights)
        if isinstance(self.sharding, str):
            self.sharding = _parse_pairs(self.sharding, "train.sharding", "field:sharding_type")
        for name, kind in (self.sharding or {}).items():
            if kind not in SHARDING_TYPES:
                raise ConfigError(f"train.sharding: {name}: {kind!r} is not one of {list(SHARDING_TYPES)}")
        if isinstance(self.positive_weight, str):
            self.positive_weight = _parse_weights(self.positive_weight, "positive_weight")
        if isinstance(self.negative_sampling, str):
            self.negative_sampling = _parse_weights(self.negative_sampling, "negative_sampling")
        for task, w in (self.positive_weight or {}).items():
            if not w > 0:
                raise ConfigError(f"train.positive_weight: {task}: must be > 0, got {w}")
        for task, r in (self.negative_sampling or {}).items():
            if not 0 < r <= 1:
                raise ConfigError(f"train.negative_sampling: {task}: the keep rate must be in (0, 1], got {r}")
        if isinstance(self.embedding_lr, str):
            # Configs built directly (not through ``build_config``) may still carry the raw ``--set`` string.
            text = self.embedding_lr.strip().lower()
            try:
                self.embedding_lr = None if text in ("none", "null", "") else float(text)
            except ValueError:
                raise ConfigError(f"train.embedding_lr: expected a number or none, got {text!r}") from None
        checks = [
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("loss_weighting", self.loss_weighting, LOSS_WEIGHTINGS),
            ("scenario_weighting", self.scenario_weighting, SCENARIO_WEIGHTINGS),
            ("monitor", self.monitor, MONITORS),
            ("device", self.device, DEVICES),
            ("embeddings", self.embeddings, EMBEDDINGS),
            ("embedding_optimizer", self.embedding_optimizer, EMBEDDING_OPTIMIZERS),
            ("tracking", self.tracking, TRACKERS),
            ("calibration", self.calibration, CALIBRATIONS),
            ("lr_schedule", self.lr_schedule, LR_SCHEDULES),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                raise ConfigError(f"train.{name}: {value!r} is not one of {list(allowed)}")
        for name in ("batch_size", "eval_batch_size", "max_epochs", "log_every", "dwa_temperature", "evals_per_epoch"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        non_negative = ("patience", "checkpoint_every", "num_threads", "grad_clip", "lr", "weight_decay",
                        "embedding_weight_decay", "warmup_steps", "min_lr_ratio", "gradnorm_alpha", "gradnorm_lr",
                        "shard_memory_mb")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must not be negative, got {getattr(self, name)}")

    def task_weight_vector(self, task_names: list[str], defaults: list[float]) -> list[float]:
        """Weights in task order: the schema's defaults overridden by ``task_weights``."""
        given = dict(self.task_weights or {})
        unknown = sorted(set(given) - set(task_names))
        if unknown:
            raise ConfigError(f"train.task_weights: unknown task(s) {unknown}; tasks: {task_names}")
        return [float(given.get(n, d)) for n, d in zip(task_names, defaults, strict=True)]

    def check_sampling(self, tasks: list) -> None:
        """``positive_weight`` / ``negative_sampling`` name binary tasks of the schema, and only those."""
        from msmtrec.tasks import kind_of

        probability = {t.name for t in tasks if kind_of(t).probability}
        for key in ("positive_weight", "negative_sampling"):
            wrong = sorted(set(getattr(self, key) or {}) - probability)
            if wrong:
                raise ConfigError(f"train.{key}: {wrong} are not binary tasks; binary tasks: {sorted(probability)}")

    def lr_factor(self, step: int, steps_per_epoch: int) -> float:
        """Learning-rate multiplier at optimiser step ``step`` (0-based): a pure function, so resume is exact."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.lr_schedule == "cosine":
            total = max(self.max_epochs * steps_per_epoch - self.warmup_steps, 1)
            t = min(max(step - self.warmup_steps, 0) / total, 1.0)
            return warm * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
        if self.lr_schedule == "step":
            return warm * self.lr_gamma ** ((step // max(steps_per_epoch, 1)) // max(self.lr_step_epochs, 1))
        return warm


def _parse_weights(text: str, key: str = "task_weights") -> dict[str, float]:
    out: dict[str, float] = {}
    for part in text.strip("{}").split(","):
        if not part.strip():
            continue
        if ":" not in part:
            raise ConfigError(f"train.{key}: expected task:value pairs, got {text!r}")
        name, value = part.split(":", 1)
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"train.{key}: {value.strip()!r} is not a number") from None
    return out


def _parse_pairs(text: str, key: str, form: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.strip("{}").split(","):
        if not part.strip():
            continue
        if ":" not in part:
            raise ConfigError(f"{key}: expected {form} pairs, got {text!r}")
        name, value = part.split(":", 1)
        out[name.strip()] = value.strip()
    return out
