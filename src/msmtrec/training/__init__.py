"""Training and evaluation: the trainer, the multi-task loss, metrics and run directories."""

from msmtrec.training.config import TrainConfig
from msmtrec.training.metrics import auc, compute_metrics, gauc
from msmtrec.training.trainer import FitResult, Trainer

__all__ = ["FitResult", "TrainConfig", "Trainer", "auc", "compute_metrics", "gauc"]
