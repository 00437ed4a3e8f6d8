"""Reading a finished run folder: the one place that knows the RUN_DIR layout on the reading side.

A run folder written by ``msmtrec train`` holds ``config.yaml`` (model name and config, training config,
dataset, seed), ``preprocessor.json`` (the preprocessing artifact), ``model.pt`` (best weights as a plain
state dict), ``output_mapping.json`` (post-hoc output parameters), ``history.csv`` and ``metrics.json``.
Evaluation, export, batch prediction and the service all
load a run through :func:`load_run`, so they agree on how a model is rebuilt.
"""

from __future__ import annotations

import json
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
    config = yaml.safe_load((run / CONFIG).read_text()) or {}
    pre: Preprocessor | None = None
    if (run / PREPROCESSOR).exists():
        from msmtrec.data.preprocessor import Preprocessor

        pre = Preprocessor.load(run)
        schema = pre.schema
    elif (run / SCHEMA).exists():
        schema = Schema.from_dict(json.loads((run / SCHEMA).read_text()))
    else:
        raise MsmtrecError(f"{run}: neither {PREPROCESSOR} nor {SCHEMA}; cannot rebuild the model")
    model = build_model(model_name(config), schema, model_overrides(config))
    state = torch.load(run / WEIGHTS, map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    model.output_mapping = OutputMapping.load(run, schema)  # fitted bias correction / calibration, if any
    model.eval()
    metrics = json.loads((run / METRICS).read_text()) if (run / METRICS).exists() else {}
    return LoadedRun(run, model, pre, config, metrics)
