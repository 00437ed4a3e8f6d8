"""Experiment tracking: TensorBoard event files in every run, MLflow when asked for.

The trainer calls one :class:`Tracker` at four points (start, every optimiser step, every epoch end, the
end of ``fit``); the tracker decides what to record and where. Only rank 0 tracks, and only when the run
has a folder.

What is recorded (the same scalar names in both back-ends)::

    train/loss/{total|task}               per step, every ``train.log_every`` steps (mean since the last log)
    train/lr/{dense|embedding|loss}       learning rate of each optimiser group
    train/samples_per_second              rows per second since the last log (all ranks)
    epoch/train_loss/{total|task}         per epoch (x axis: epoch number, from 1)
    valid/{scenario|overall}/{task}/{m}   per epoch: every validation metric of every scenario × task cell
    valid/mean_auc, valid/monitor, ...    per epoch: the summaries early stopping looks at
    gates/.../expert{i}, mixing/.../input{i}
                                          per epoch: mean weight of each expert (or mixed input) over a
                                          validation sample, for every [B, n] tensor ``explain()`` returns

TensorBoard files go to ``RUN_DIR/tensorboard/`` (``tensorboard --logdir RUN_DIR``).
No name is a prefix folder of another (``train/loss/total``, not ``train/loss``): MLflow's file store needs that.
MLflow (``train.tracking=mlflow`` or ``msmtrec train --tracking mlflow``) records the run's parameters, the scalars
above and, at the end, the run folder as artifacts; the tracking URI is ``train.mlflow_uri``, else
``MLFLOW_TRACKING_URI``, else MLflow's default (``sqlite:///mlflow.db`` with artifacts in ``./mlartifacts``
since MLflow 3; both git-ignored here).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

TENSORBOARD_DIR = "tensorboard"
GATE_SAMPLE_ROWS = 2048
_GROUP_NAMES = ("dense", "embedding", "loss")


def flatten(prefix: str, value: Any, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a/b": 1}``; what both back-ends want for nested configs and metrics."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}/{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def gate_summaries(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean weight per expert of every ``[B, n]`` tensor ``model.explain(batch)`` returns (gates, mixing).

    Keys keep the model's names (``gates/level0/task:click``, ``mixing/click``); others go under ``gates/``.
    """
    explain = getattr(model, "explain", None)
    if not callable(explain):
        return {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            weights = explain(batch)
    finally:
        model.train(was_training)
    out: dict[str, float] = {}
    for key, w in weights.items():
        if isinstance(w, torch.Tensor) and w.dim() == 2 and w.shape[0] > 0:
            name = key if key.startswith(("gates/", "mixing/")) else f"gates/{key}"
            unit = "expert" if name.startswith("gates/") else "input"
            for i, m in enumerate(w.float().mean(0).tolist()):
                out[f"{name}/{unit}{i}"] = m
    return out


class Tracker:
    """Records a training run to TensorBoard (always, when there is a run folder) and MLflow (optional)."""

    def __init__(
        self,
        run_dir: Path | None,
        tracking: str = "none",
        log_every: int = 50,
        mlflow_uri: str | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.run_dir = run_dir
        self.log_every = max(int(log_every), 1)
        self.writer: Any | None = None
        self.mlflow: Any | None = None
        self._sums: torch.Tensor | None = None
        self._steps = 0
        self._rows = 0
        self._rate_rows = 0  # rows since the throughput clock started (restarted after each validation pass)
        self._since = time.perf_counter()
        if run_dir is None:
            return
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))
        if tracking == "mlflow":
            self.mlflow = _start_mlflow(run_dir, mlflow_uri)

    @property
    def active(self) -> bool:
        return self.writer is not None or self.mlflow is not None

    def log_run(self, model: torch.nn.Module, config: Any, seed: int) -> None:
        """The model's class and settings, the trainer's settings and the seed."""
        if not self.active:
            return
        import dataclasses

        params: dict[str, Any] = {"model_class": type(model).__name__, "seed": seed}
        model_cfg = getattr(model, "config", None)
        if dataclasses.is_dataclass(model_cfg):
            params["model"] = dataclasses.asdict(model_cfg)
        params["train"] = dataclasses.asdict(config)
        self.log_params(params)

    def log_params(self, params: dict[str, Any]) -> None:
        """The run's settings (flattened); MLflow records them as parameters, TensorBoard as text."""
        if not self.active:
            return
        flat = flatten("", params)
        if self.writer is not None:
            table = "\n".join(f"| {k} | {v} |" for k, v in sorted(flat.items()))
            self.writer.add_text("config", "| setting | value |\n|---|---|\n" + table, 0)
        if self.mlflow is not None:
            self.mlflow.log_params({_mlflow_key(k): str(v)[:500] for k, v in flat.items()})

    def step(
        self, step: int, per_task: torch.Tensor, total: torch.Tensor, rows: int,
        optimizer: torch.optim.Optimizer, task_names: list[str],
    ) -> None:
        """Called after every optimiser step; writes the mean loss since the last write every ``log_every``."""
        if not self.active:
            return
        losses = torch.cat([per_task.detach(), total.detach().reshape(1)]).double()
        self._sums = losses * rows if self._sums is None else self._sums + losses * rows
        self._steps += 1
        self._rows += rows
        self._rate_rows += rows
        if step % self.log_every != 0:
            return
        mean = (self._sums / max(self._rows, 1)).tolist()
        now = time.perf_counter()
        rate = self._rate_rows / max(now - self._since, 1e-9)
        scalars = {"train/loss/total": mean[-1], "train/samples_per_second": rate}
        scalars.update({f"train/loss/{n}": mean[i] for i, n in enumerate(task_names)})
        for i, g in enumerate(optimizer.param_groups):
            scalars[f"train/lr/{g.get('name') or (_GROUP_NAMES[i] if i < len(_GROUP_NAMES) else i)}"] = float(g["lr"])
        self._write(scalars, step)
        self._sums, self._steps, self._rows, self._rate_rows, self._since = None, 0, 0, 0, now

    def epoch(self, epoch: int, row: dict[str, Any], metrics: dict[str, Any], model: torch.nn.Module,
              sample: dict[str, torch.Tensor] | None) -> None:
        """Called at every epoch end with the history row, the validation metrics and a validation sample."""
        if not self.active:
            return
        scalars: dict[str, float] = {}
        for k, v in row.items():
            if k == "epoch" or k.startswith("valid/"):
                continue
            scalars[f"epoch/{k}/total" if k == "train_loss" else f"epoch/{k}"] = v
        for key in ("monitor", "mean_auc", "mean_gauc", "mean_logloss", "mean_rmse"):
            value = row.get(f"valid/{key}") if key == "monitor" else metrics.get(key)
            scalars[f"valid/{key}"] = value
        sections = {**metrics.get("by_scenario", {}), "overall": metrics.get("overall", {})}
        for scen, cells in sections.items():
            for task, cell in cells.items():
                for m, v in cell.items():
                    if m != "rows" and m != "positives":
                        scalars[f"valid/{scen}/{task}/{m}"] = v
        if sample is not None:
            scalars.update(gate_summaries(model, sample))
        self._write({k: v for k, v in scalars.items() if _finite(v)}, epoch + 1)
        if self.writer is not None:
            self.writer.flush()  # an epoch's record survives a crash or kill -9
        self._rate_rows, self._since = 0, time.perf_counter()  # validation time is not training throughput

    def close(self, status: str = "FINISHED") -> None:
        """Flush TensorBoard; upload the run folder to MLflow and end its run."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.mlflow is not None:
            mlflow, self.mlflow = self.mlflow, None
            try:
                if self.run_dir is not None and status == "FINISHED":
                    mlflow.log_artifacts(str(self.run_dir), artifact_path="run")
            finally:
                mlflow.end_run(status=status)

    def _write(self, scalars: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)
        if self.mlflow is not None:
            self.mlflow.log_metrics({_mlflow_key(k): float(v) for k, v in scalars.items()}, step=step)


def _mlflow_key(key: str) -> str:
    """MLflow names allow letters, digits, ``_ - . / space``: other characters (``task:click``) become ``_``."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


def _start_mlflow(run_dir: Path, uri: str | None) -> Any:
    from msmtrec.errors import ConfigError

    try:
        import mlflow
    except ModuleNotFoundError:
        raise ConfigError("train.tracking=mlflow needs MLflow: pip install 'msmtrec[mlflow]'") from None
    if uri:
        mlflow.set_tracking_uri(uri)
    if mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.start_run(run_name=run_dir.name, tags={"msmtrec.run_dir": str(run_dir.resolve())})
    return mlflow


def open_tracker(config: Any, run_dir: Path | None, is_main: bool) -> Tracker:
    """The tracker for a :class:`~msmtrec.training.config.TrainConfig`: inactive off rank 0 or without a folder."""
    return Tracker(
        run_dir if is_main else None,
        tracking=config.tracking,
        log_every=config.log_every,
        mlflow_uri=config.mlflow_uri,
        tensorboard=config.tensorboard,
    )


def sample_batch(dataset: Any, device: torch.device, rows: int = GATE_SAMPLE_ROWS) -> dict[str, torch.Tensor] | None:
    """The first ``rows`` validation rows, for gate summaries (``None`` if the split cannot be sliced)."""
    batches = getattr(dataset, "batches", None)
    if batches is None or len(dataset) == 0:
        return None
    first = next(iter(batches(min(rows, len(dataset)), shuffle=False)))
    return {k: v.to(device) for k, v in first.items()}
