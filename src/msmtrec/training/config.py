"""Trainer settings: one typed dataclass, so YAML ``train:`` sections and ``--set train.x=v`` are checked.

Defaults are chosen to work on the shipped data (Hillstrom, ~64k rows): a 1024-row batch, Adam at 1e-3,
up to 10 epochs with early stopping after 2 epochs without validation improvement.
"""

from __future__ import annotations

from dataclasses import dataclass

from msmtrec.errors import ConfigError

OPTIMIZERS = ("adam", "adamw")
LOSS_WEIGHTINGS = ("fixed", "uncertainty")
SCENARIO_WEIGHTINGS = ("none", "inverse_frequency", "sqrt_inverse")
MONITORS = ("auto", "mean_auc", "weighted_auc", "mean_gauc", "mean_logloss", "mean_rmse")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Everything the trainer needs besides the model, the data and the seed."""

    batch_size: int = 1024
    """Global batch size: under ``torchrun`` each of N ranks takes ``ceil(batch_size / N)`` rows per step,
    so a distributed run takes the same optimiser steps as a single-process one."""
    max_epochs: int = 10
    """Upper bound on epochs; early stopping usually ends training sooner."""
    patience: int = 2
    """Epochs without a validation improvement (by more than ``min_delta``) before stopping."""
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
    """``fixed`` (per-task weights) or ``uncertainty`` (Kendall et al., 2018: learned log-variances,
    still multiplied by the per-task weights)."""
    task_weights: dict[str, float] | None = None
    """Per-task loss weights; tasks not named keep ``Task.weight`` from the schema. From ``--set`` write
    ``train.task_weights=click:1,conversion:2``."""
    scenario_weighting: str = "none"
    """Per-sample weights against scenario imbalance: ``none``, ``inverse_frequency`` or ``sqrt_inverse``
    (normalised so the mean sample weight over the training split is 1)."""
    eval_batch_size: int = 8192
    """Rows per forward pass when evaluating (no gradients, so larger than the training batch)."""
    checkpoint_every: int = 100
    """Write the resumable ``last.pt`` every this many optimiser steps (and always at epoch end); 0: only
    at epoch end."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    progress: bool = True
    """Show the tqdm progress bar (rank 0 only)."""
    num_threads: int = 0
    """CPU threads for torch ops (0: torch's default). On small shared machines 1 is often fastest."""
    find_unused_parameters: bool = True
    """Passed to DistributedDataParallel; models with branches unused by some batches need it."""

    def __post_init__(self) -> None:
        if isinstance(self.task_weights, str):
            self.task_weights = _parse_weights(self.task_weights)
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
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                raise ConfigError(f"train.{name}: {value!r} is not one of {list(allowed)}")
        for name in ("batch_size", "eval_batch_size", "max_epochs"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        non_negative = ("patience", "checkpoint_every", "num_threads", "grad_clip", "lr", "weight_decay",
                        "embedding_weight_decay")
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


def _parse_weights(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in text.strip("{}").split(","):
        if not part.strip():
            continue
        if ":" not in part:
            raise ConfigError(f"train.task_weights: expected task:weight pairs, got {text!r}")
        name, value = part.split(":", 1)
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"train.task_weights: {value.strip()!r} is not a number") from None
    return out
