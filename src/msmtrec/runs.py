"""Reading and writing a run folder: the one place that knows the RUN_DIR layout.

A run folder written by ``msmtrec train`` holds ``config.yaml`` (model name and config, training config,
dataset, seed), ``preprocessor.json`` (the preprocessing artifact), ``model.pt`` (best weights as a plain
state dict), ``output_mapping.json`` (post-hoc output parameters), ``history.csv`` and ``metrics.json``.
Training writes a run through :func:`write_run_start` and :func:`write_metrics`; evaluation, export,
batch prediction and the service all load one through :func:`load_run`, so they agree on how a model is
rebuilt. ``config.yaml`` has one layout: ``model_name: NAME`` and ``model: {settings}`` (run folders
written before this layout, with ``model: {name, config}``, are still read).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from msmtrec.data.schema import Schema
from msmtrec.errors import MsmtrecError
from msmtrec.models.base import MultiTaskModel, build_model
from msmtrec.tasks import OutputMapping

if TYPE_CHECKING:  # pandas is imported only when a run has a preprocessor to load
    from msmtrec.data.preprocessor import Preprocessor

CONFIG = "config.yaml"
WEIGHTS = "model.pt"
METRICS = "metrics.json"
PREPROCESSOR = "preprocessor.json"
SCHEMA = "schema.json"
STATE = "last.pt"
TMP_SUFFIX = ".tmp"
"""Temporary files of atomic writes are ``.{name}.{pid}.tmp`` (see :mod:`msmtrec.atomic`)."""


@dataclass
class LoadedRun:
    path: Path
    model: MultiTaskModel
    preprocessor: Preprocessor | None
    """``None`` only for runs on generated data (``--data planted``), which have a ``schema.json`` instead."""
    config: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def model_name(self) -> str:
        return model_name(self.config)


def write_run_start(
    out: Path, config: Mapping[str, Any], schema: Schema, preprocessor: Preprocessor | None = None
) -> None:
    """``schema.json``, ``preprocessor.json`` and last ``config.yaml``, whose presence marks a started run."""
    from msmtrec.atomic import write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / SCHEMA, json.dumps(schema.to_dict(), indent=2) + "\n")
    if preprocessor is not None:
        preprocessor.save(out)
    write_text_atomic(out / CONFIG, yaml.safe_dump(dict(config), sort_keys=False))


def write_metrics(out: Path, metrics: Mapping[str, Any]) -> None:
    """``metrics.json`` (test metrics of a finished run)."""
    from msmtrec.atomic import write_text_atomic

    write_text_atomic(out / METRICS, json.dumps(dict(metrics), indent=2, allow_nan=False) + "\n")


def model_name(config: dict[str, Any]) -> str:
    """The registered model name: ``model_name:`` (what ``msmtrec train`` writes) or ``model: {name: ...}``."""
    if config.get("model_name"):
        return str(config["model_name"])
    m = config.get("model")
    if isinstance(m, dict) and m.get("name"):
        return str(m["name"])
    if isinstance(m, str):
        return m
    raise MsmtrecError("config.yaml names no model (expected model_name: NAME)")


def model_overrides(config: dict[str, Any]) -> dict[str, Any]:
    """The model config: ``model:`` itself when ``model_name:`` is given, else ``model: {config: ...}``."""
    m = config.get("model")
    if not isinstance(m, dict):
        return dict(config.get("model_config") or {})
    if config.get("model_name"):
        return dict(m)
    return dict(m.get("config") or {k: v for k, v in m.items() if k != "name"})


def saved_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """The model config a run was trained with, completed for settings added since it was saved."""
    from msmtrec.models.base import complete_saved_config

    return complete_saved_config(model_name(config), model_overrides(config))


def load_run(
    run_dir: str | Path, map_location: str | torch.device = "cpu", require_preprocessor: bool = True
) -> LoadedRun:
    """Rebuild the trained model (eval mode) with its preprocessor from a run folder.

    Serving and export need the preprocessor (raw rows in); evaluation of an encoded split does not, so it
    passes ``require_preprocessor=False`` and a run on generated data rebuilds from ``schema.json``.
    """
    run = Path(run_dir)
    needed = (CONFIG, WEIGHTS, PREPROCESSOR) if require_preprocessor else (CONFIG, WEIGHTS)
    for name in needed:
        if not (run / name).exists():
            raise MsmtrecError(f"{run}: not a finished run folder (missing {name}); train one with `msmtrec train`")
    config = read_config(run / CONFIG)
    pre: Preprocessor | None = None
    if (run / PREPROCESSOR).exists():
        from msmtrec.data.preprocessor import Preprocessor

        pre = Preprocessor.load(run)
        schema = pre.schema
    elif (run / SCHEMA).exists():
        schema = Schema.from_dict(json.loads((run / SCHEMA).read_text()))
    else:
        raise MsmtrecError(f"{run}: neither {PREPROCESSOR} nor {SCHEMA}; cannot rebuild the model")
    model = build_model(model_name(config), schema, saved_model_config(config))
    weights = run / WEIGHTS
    load_weights(model, load_checkpoint(weights, map_location), weights, f"{run / PREPROCESSOR}" if pre else "")
    model.output_mapping = OutputMapping.load(run, schema)  # fitted bias correction / calibration, if any
    model.eval()
    metrics = json.loads((run / METRICS).read_text()) if (run / METRICS).exists() else {}
    return LoadedRun(run, model, pre, config, metrics)


def read_config(path: Path) -> dict[str, Any]:
    """A run's ``config.yaml`` as a mapping, or a one-line error."""
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise MsmtrecError(f"{path}: damaged run config ({type(e).__name__}); restore it or retrain the run") from None
    if not isinstance(config, dict):
        raise MsmtrecError(f"{path}: damaged run config (expected a mapping); restore it or retrain the run")
    return config


# ------------------------------------------------------------------------------------------- checkpoints


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with a one-line error for each way a checkpoint file can be bad.

    Only tensors and plain containers are ever loaded: a file holding pickled Python objects is refused
    with a message that says how to re-save it, never by loading it unsafely.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise MsmtrecError(f"{path}: no such checkpoint; train the run (msmtrec train) to write it") from None
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = f"a pickled {found.group(1)}" if found else "pickled Python objects"
        raise MsmtrecError(
            f"{path}: not a plain tensor checkpoint (it holds {what}, which msmtrec refuses to unpickle); "
            "save a state dict of tensors instead (torch.save(model.state_dict(), path)) or retrain the run"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
        size = path.stat().st_size if path.exists() else 0
        reason = "empty" if size == 0 else "truncated or damaged"
        detail = str(e).split(".")[0].strip() or type(e).__name__
        raise MsmtrecError(
            f"{path}: {reason} checkpoint ({size:,} bytes; {detail}); restore the file or retrain the run"
        ) from None


def load_weights(model: torch.nn.Module, state: Any, path: Path, schema_source: str = "") -> None:
    """Load ``state`` into ``model``; a checkpoint of another schema or model names the first mismatch."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MsmtrecError(
            f"{path}: not a model state dict (expected parameter names mapped to tensors, got {type(state).__name__})"
        )
    own = model.state_dict()
    built = f"the model built from {schema_source}" if schema_source else "the model this run's config builds"
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if mismatched:
        k = mismatched[0]
        raise MsmtrecError(
            f"{path}: parameter {k!r} has shape {list(state[k].shape)} in the checkpoint but {list(own[k].shape)} "
            f"in {built} ({len(mismatched)} mismatching parameter(s)): the checkpoint comes from another dataset "
            "schema; keep model.pt with the preprocessor.json and config.yaml it was trained with, or retrain"
        )
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        first = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise MsmtrecError(
            f"{path}: parameters do not match {built} ({first}; {len(missing)} missing, {len(unexpected)} "
            "unexpected): the checkpoint comes from another model or config; keep it with its own config.yaml"
        )
    model.load_state_dict(state)


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete temporary files a killed writer left in ``run_dir`` (their writer process no longer runs)."""
    removed = []
    for tmp in Path(run_dir).glob(f".*{TMP_SUFFIX}"):
        pid = tmp.name[: -len(TMP_SUFFIX)].rsplit(".", 1)[-1]
        if pid.isdigit() and _alive(int(pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
