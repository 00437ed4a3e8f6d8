"""Run directories: train a model from a data spec into RUN_DIR, resume it, and re-evaluate it.

This is the glue between the data pipeline, the model registry and :class:`Trainer`; the CLI only parses
arguments and calls these functions. A run directory holds:

``config.yaml``        resolved config: ``model_name``, ``data`` (spec as given), ``dataset`` (its name),
                       ``sample``, ``seed``, ``model`` (every model setting), ``train`` (every trainer
                       setting), ``world_size``, ``msmtrec_version``. It is also a valid ``--config`` file.
``preprocessor.json``  the fitted preprocessing artifact (absent for the built-in ``planted`` data).
``schema.json``        the encoded-data schema the model was built from.
``model.pt``           best-validation weights: a plain state dict (``torch.load(weights_only=True)``).
``last.pt``            resumable training state (see :mod:`msmtrec.training.trainer`).
``history.csv``        one row per epoch: train loss per task, validation metrics, monitored value.
``output_mapping.json`` post-hoc output parameters fitted on the validation split (regression bias
                       correction, calibrators, sampling offsets; see :mod:`msmtrec.tasks.mapping`).
``metrics.json``       test-split metrics (schema in :mod:`msmtrec.training.metrics`).

Data specs: a shipped dataset name (``hillstrom``), a spec YAML path, a directory written by
``msmtrec data prepare``, or ``planted[:ROWS]`` — generated data with a planted signal (three tasks, a
funnel, a regression target and user ids), for smoke tests that need no files.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import msmtrec
from msmtrec import runs
from msmtrec.config import build_config
from msmtrec.data.dataset import TensorDataset
from msmtrec.data.files import is_data_file
from msmtrec.data.schema import Schema
from msmtrec.data.sources import load_data, load_streamed
from msmtrec.errors import ConfigError
from msmtrec.models.base import MultiTaskModel, build_model, config_dict, model_class
from msmtrec.tasks import OutputMapping
from msmtrec.training.config import TrainConfig
from msmtrec.training.distributed import DistContext, init_distributed, shutdown_distributed
from msmtrec.training.metrics import compute_metrics, format_table, predict_split
from msmtrec.training.trainer import STATE_FILE, Trainer, seed_everything

CONFIG_FILE = runs.CONFIG
SCHEMA_FILE = runs.SCHEMA
METRICS_FILE = runs.METRICS
PREPROCESSOR_FILE = runs.PREPROCESSOR
_CONFIG_KEYS = (
    "model_name", "data", "dataset", "sample", "stream", "seed", "model", "train", "world_size", "msmtrec_version",
    "lineage",
)


@dataclass
class WarmStart:
    """``train --init-from``: the finished parent run and how to extend it (see :mod:`msmtrec.training.warm_start`)."""

    parent: runs.LoadedRun
    dense: str = "keep"
    new_scenario: str = "mean"

    def report(self, data_report: dict[str, Any]) -> None:
        """Print what extending the parent's encoders added."""
        ext = data_report.get("extension")
        if ext:
            grown = ", ".join(f"{k} +{v}" for k, v in ext["appended"].items() if v) or "none"
            print(f"warm start from {self.parent.path}: vocabulary grown: {grown}; new scenarios: "
                  f"{', '.join(ext['new_scenarios']) or 'none'}; dense statistics: {ext['dense']}")

    def lineage(self, data: str) -> dict[str, Any]:
        """What the child run records about where it came from."""
        parent_lineage = self.parent.config.get("lineage") or {}
        return {
            "parent": str(self.parent.path.resolve()),
            "parent_data": self.parent.config.get("data"),
            "data": data,
            "generation": int(parent_lineage.get("generation", 0)) + 1,
            "dense": self.dense,
            "new_scenario": self.new_scenario,
        }


# ------------------------------------------------------------------------------------------- configs


def split_overrides(sets: dict[str, Any], model_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route ``--set`` keys: ``model.x`` → model config, ``train.x`` → trainer config.

    A bare ``x`` goes to whichever of the two has a field ``x``; a name both have (or neither) is an
    error that asks for the prefix.
    """
    model_fields = {f.name for f in dataclasses.fields(model_class(model_name).Config)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_o: dict[str, Any] = {}
    train_o: dict[str, Any] = {}
    for key, value in sets.items():
        if key.startswith("model."):
            model_o[key[6:]] = value
        elif key.startswith("train."):
            train_o[key[6:]] = value
        elif key in model_fields and key in train_fields:
            raise ConfigError(f"--set {key}: ambiguous; write model.{key} or train.{key}")
        elif key in model_fields:
            model_o[key] = value
        elif key in train_fields:
            train_o[key] = value
        else:
            raise ConfigError(
                f"--set {key}: unknown key; model {model_name} knows {sorted(model_fields)}, "
                f"train knows {sorted(train_fields)} (prefix with model. or train.)"
            )
    return model_o, train_o


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML file with optional ``model:`` and ``train:`` sections and top-level run keys."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping with model: / train: sections")
    unknown = sorted(set(data) - set(_CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"--config {path}: unknown key(s) {unknown}; known keys: {list(_CONFIG_KEYS)}")
    for section in ("model", "train"):
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise ConfigError(f"--config {path}: {section}: must be a mapping of settings")
    return data


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------------- train


def train(
    out: str | Path,
    data: str | None = None,
    model_name: str | None = None,
    config_file: str | Path | None = None,
    sets: dict[str, Any] | None = None,
    seed: int | None = None,
    sample: int | None = None,
    resume: bool = False,
    stream: bool = False,
    init_from: str | Path | None = None,
    warm_dense: str = "keep",
    new_scenario: str = "mean",
) -> dict[str, Any]:
    """Train into ``out`` (or continue it with ``resume``); returns the test metrics (every rank).

    ``init_from`` warm-starts from a finished run: its model name and config are the defaults, its encoders
    are extended with the new data and its weights carried over (:mod:`msmtrec.training.warm_start`).
    """
    out = Path(out)
    warm = None
    if init_from is not None:
        if resume:
            raise ConfigError("--init-from starts a new run; it cannot be combined with --resume")
        warm = WarmStart(runs.load_run(init_from), warm_dense, new_scenario)
        model_name = model_name or warm.parent.model_name
        if model_name != warm.parent.model_name:
            raise ConfigError(
                f"--init-from {init_from}: the parent is a {warm.parent.model_name} run, not {model_name}"
            )
    if resume:
        if not (out / CONFIG_FILE).exists():
            raise ConfigError(f"--resume {out}: no {CONFIG_FILE} there; not a run directory")
        if data or model_name or config_file or sets or seed is not None or sample is not None or stream:
            raise ConfigError("--resume takes the run directory only; its config.yaml fixes everything else")
        cfg = read_config_file(out / CONFIG_FILE)
    else:
        cfg = read_config_file(config_file) if config_file else {}
    model_name = model_name or cfg.get("model_name")
    data = data or cfg.get("data")
    if not model_name:
        raise ConfigError("no model: pass --model NAME (or model_name: in --config)")
    if not data:
        raise ConfigError("no data: pass --data SPEC (or data: in --config)")
    seed = int(seed if seed is not None else cfg.get("seed") or 0)
    sample = sample if sample is not None else cfg.get("sample")
    stream = bool(stream or cfg.get("stream"))
    model_set, train_set = split_overrides(sets or {}, model_name)
    parent_model = runs.saved_model_config(warm.parent.config) if warm is not None else {}
    model_over = {**parent_model, **(cfg.get("model") or {}), **model_set}
    train_cfg = build_config(TrainConfig, {**(cfg.get("train") or {}), **train_set}, where="train")
    model_class(model_name)  # fail on an unknown model before reading any data

    ctx, device = init_distributed(train_cfg.device)
    try:
        taken = (out / CONFIG_FILE).exists()
        ctx.barrier()  # every rank looks before rank 0 writes anything
        if taken and not resume:
            raise ConfigError(f"--out {out}: already holds a run; use --resume {out} or another directory")
        loaded = load_data(data, seed=seed, sample=sample, stream=stream,
                           extend=warm.parent.preprocessor if warm else None,
                           extend_dense=warm.dense if warm else "keep")
        if warm is not None:
            warm.report(loaded.report)
        if ctx.is_main and loaded.report:
            from msmtrec.data.pipeline import data_notes

            for note in data_notes(loaded.report):
                print(f"data: {note}")
        seed_everything(seed)
        sharding = _sharding_module(train_cfg)

        def build() -> MultiTaskModel:
            built = build_model(model_name, loaded.schema, model_over)
            if warm is not None:
                from msmtrec.training.warm_start import transfer_state

                print(transfer_state(warm.parent.model, built, warm.new_scenario).summary())
            return built

        if sharding is None:
            model = build()
        else:
            if warm is not None and ctx.enabled:
                raise ConfigError("--init-from cannot be combined with sharded tables (train.embeddings=torchrec "
                                  "under torchrun) yet: warm-start one process, or train plain")
            model = sharding.build_model_torchrec(build, ctx)
        if ctx.is_main and not resume:
            out.mkdir(parents=True, exist_ok=True)
            resolved = {
                "model_name": model_name,
                "data": str(data),
                "dataset": loaded.name,
                "sample": sample,
                "stream": stream,
                "seed": seed,
                "model": _plain(config_dict(model)),
                "train": _plain(dataclasses.asdict(train_cfg)),
                "world_size": ctx.world_size,
                "msmtrec_version": msmtrec.__version__,
            }
            if warm is not None:
                resolved["lineage"] = warm.lineage(str(data))
            runs.write_run_start(out, resolved, loaded.schema, loaded.preprocessor)
        if ctx.is_main:
            runs.remove_stale_temporaries(out)  # left by a killed run; none of ours is being written now
        ctx.barrier()
        trainer_cls = Trainer if sharding is None else sharding.ShardedTrainer
        trainer = trainer_cls(train_cfg, seed=seed, run_dir=out, ctx=ctx, device=device)
        result = trainer.fit(model, loaded.splits, resume=resume and (out / STATE_FILE).exists())
        model.output_mapping = fit_output_mapping(trainer, model, loaded.splits["valid"])
        if ctx.is_main:
            model.output_mapping.save(out)
        test = trainer.evaluate(model, loaded.splits["test"])
        metrics = {
            "split": "test",
            "model": model_name,
            "dataset": loaded.name,
            "seed": seed,
            "params": model.num_parameters(),
            "train_seconds": round(result.train_seconds, 3),
            "samples_per_second": round(result.samples_per_second, 1),
            "best_epoch": result.kept_at,  # 1-based, as on the console and in history.csv
            "epochs": result.epochs,
            "world_size": ctx.world_size,
            **test,
        }
        if ctx.is_main:
            runs.write_metrics(out, metrics)
            print(f"{model_name} on {loaded.name} — test split (best epoch {metrics['best_epoch']}):")
            print(format_table(loaded.schema, metrics))
            print(f"run written to {out}")
            sys.stdout.flush()
        ctx.barrier()
        return metrics
    finally:
        shutdown_distributed()


def _sharding_module(train_cfg: TrainConfig) -> Any | None:
    """:mod:`msmtrec.training.sharding` when ``train.embeddings=torchrec`` (it needs the torchrec extra)."""
    if train_cfg.embeddings != "torchrec":
        return None
    try:
        from msmtrec.training import sharding
    except ImportError as e:
        raise ConfigError(
            f"train.embeddings=torchrec needs TorchRec ({e}); install the extra: see docs/scale.md (make torchrec)"
        ) from None
    return sharding


def fit_output_mapping(trainer: Trainer, model: MultiTaskModel, valid: TensorDataset) -> OutputMapping:
    """Fit the run's output mapping on the validation split (bias correction, calibrators); never on test.

    The sampling offsets the trainer set (down-sampled negatives, weighted positives) are kept as the base
    the calibrators are fitted on top of.
    """
    preds = trainer.predict(model, valid)
    return OutputMapping.fit(
        model.schema, preds.outputs, preds.labels, preds.scenario, trainer.config.calibration,
        base=model.output_mapping.params,
    )


# -------------------------------------------------------------------------------------------- evaluate


def load_run_model(run_dir: str | Path) -> tuple[MultiTaskModel, dict[str, Any], Any | None]:
    """A run's model (eval mode), its config.yaml and its preprocessor (``None`` for generated data)."""
    loaded = runs.load_run(run_dir, require_preprocessor=False)
    return loaded.model, loaded.config, loaded.preprocessor


def _model_view(schema: Schema) -> dict[str, Any]:
    d = schema.to_dict()
    d.pop("extra", None)
    return d


def evaluate(
    run_dir: str | Path, data: str | None = None, split: str = "test", device: str = "auto"
) -> dict[str, Any]:
    """Recompute metrics of a run on ``split`` of its own data, another spec, or a raw data file.

    Without ``data`` the run's spec is prepared again with its seed and sample, which reproduces the
    exact encoding. A raw ``.csv``/``.parquet`` file is read and filtered as the run's spec reads its
    own files, encoded with the run's preprocessor and evaluated whole; another spec must encode to the
    same schema as the run.
    """
    from msmtrec.training.distributed import resolve_device

    model, cfg, pre = load_run_model(run_dir)
    dev = resolve_device(device)
    model.to(dev)
    if data is not None and is_data_file(data):
        if pre is None:
            raise ConfigError(f"{run_dir}: no {PREPROCESSOR_FILE}, so raw files cannot be encoded for it")
        from msmtrec.data.pipeline import read_like_spec
        from msmtrec.data.preprocessor import line_locator

        raw = read_like_spec(pre.spec, data)  # the spec's reader and filter: training's population
        batch, _ = pre.transform(raw.frame, with_labels=True, where=line_locator(raw.frame, raw.files))
        dataset, name, split = TensorDataset(batch), Path(data).name, "file"
    else:
        spec = data if data is not None else cfg["data"]
        if data is None and cfg.get("stream"):
            # A streamed run's encoders were fitted on a sample: score with the run's own, not a refit.
            loaded = load_streamed(spec, None, preprocessor=pre)
        else:
            loaded = load_data(spec, seed=int(cfg.get("seed") or 0), sample=cfg.get("sample") if data is None else None)
        if _model_view(loaded.schema) != _model_view(model.schema):
            raise ConfigError(f"--data {spec}: encodes to a different schema than the run {run_dir} was trained on")
        if split not in loaded.splits:
            raise ConfigError(f"--split {split}: unknown; splits: {sorted(loaded.splits)}")
        dataset, name = loaded.splits[split], loaded.name
    train_cfg = cfg.get("train") or {}
    preds = predict_split(model, dataset, int(train_cfg.get("eval_batch_size", 8192)), dev)
    metrics = {
        "split": split,
        "model": cfg["model_name"],
        "dataset": name,
        "seed": cfg.get("seed"),
        "params": model.num_parameters(),
        **compute_metrics(model.schema, preds, model.output_mapping),
    }
    return metrics


__all__ = ["DistContext", "evaluate", "load_run_model", "train"]
