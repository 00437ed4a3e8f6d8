"""Where a training run's data comes from: the one place that turns ``--data`` into encoded splits.

The trainer, the CLI, the benchmark and the tuner all call :func:`load_data`, so every command accepts the
same forms of ``--data`` (shipped name, spec YAML, prepared folder, ``planted[:ROWS]``, ``--stream``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from msmtrec.data.dataset import TensorDataset
from msmtrec.data.planted import planted_batch
from msmtrec.data.schema import Schema, Task, synthetic_schema
from msmtrec.errors import ConfigError

if TYPE_CHECKING:
    from msmtrec.data.preprocessor import Preprocessor

ARTIFACT_NAME = "preprocessor.json"
"""The preprocessing artifact's file name (``msmtrec.data.preprocessor.ARTIFACT_NAME``, without importing pandas)."""


@dataclass
class LoadedData:
    """What the trainer needs from the data layer, whichever source it came from."""

    name: str
    schema: Schema
    splits: dict[str, TensorDataset]
    preprocessor: Any | None = None
    report: dict[str, Any] = dataclasses.field(default_factory=dict)
    """What reading and encoding found (skipped rows, missing and non-finite values), printed by ``train``."""


def planted_schema() -> Schema:
    """Schema of the built-in ``planted`` data: click, buy inside click, a regression value, user ids."""
    tasks = (Task("click", "binary"), Task("buy", "binary", inside="click"), Task("value", "regression", weight=0.5))
    return dataclasses.replace(synthetic_schema(tasks=tasks), user_id="user_id")


def load_planted(rows: int) -> LoadedData:
    """Planted-signal splits (80/10/10) with ~20 rows per user; fixed data seed, like a spec's split seed."""
    schema = planted_schema()
    full = planted_batch(schema, rows, seed=0)
    full["labels"][:, 2] /= 3.0  # unit-scale regression target, so its MSE does not swamp the BCE terms
    full["user_id"] = torch.randint(0, max(rows // 20, 1), (rows,), generator=torch.Generator().manual_seed(1))
    a, b = int(rows * 0.8), int(rows * 0.9)
    splits = {
        "train": TensorDataset({k: v[:a] for k, v in full.items()}),
        "valid": TensorDataset({k: v[a:b] for k, v in full.items()}),
        "test": TensorDataset({k: v[b:] for k, v in full.items()}),
    }
    return LoadedData(f"planted:{rows}", schema, splits)


def _pipeline() -> Any:
    """The data pipeline, imported on first use (pandas is not needed for ``--data planted``)."""
    from msmtrec.data import pipeline

    return pipeline


def load_data(
    spec: str,
    seed: int = 0,
    sample: int | None = None,
    stream: bool = False,
    extend: Preprocessor | None = None,
    extend_dense: str = "keep",
) -> LoadedData:
    """Encoded splits for ``spec``: a shipped dataset name, a spec YAML, a folder written by
    ``msmtrec data prepare``, or ``planted[:ROWS]`` (generated data with a planted signal).

    With ``stream`` the spec's Parquet files are split by whole files, the training split is streamed
    row group by row group (memory bounded whatever its size) and valid / test are loaded into memory.
    With ``extend`` (a parent run's preprocessor: warm start) the encoders are extended with the new rows
    instead of refitted (:mod:`msmtrec.data.extend`).
    """
    if extend is not None:
        if stream or spec.startswith("planted") or (Path(spec).is_dir() and (Path(spec) / ARTIFACT_NAME).exists()):
            raise ConfigError(f"--init-from needs --data as a spec over raw files (not --stream, planted or a "
                              f"prepared folder), got {spec!r}")
        prepared = _pipeline().prepare_dataset(spec, seed=seed, sample=sample, extend=extend,
                                               extend_dense=extend_dense)
        return LoadedData(prepared.name, prepared.schema, prepared.splits, prepared.preprocessor, prepared.report)
    if stream:
        return load_streamed(spec, sample)
    if spec == "planted" or spec.startswith("planted:"):
        try:
            rows = int(spec.split(":", 1)[1]) if ":" in spec else 4000
        except ValueError:
            raise ConfigError(f"--data {spec!r}: expected planted or planted:ROWS") from None
        return load_planted(sample if sample is not None else rows)
    pipeline = _pipeline()
    path = Path(spec)
    if path.is_dir() and (path / ARTIFACT_NAME).exists():
        prepared = pipeline.load_prepared(path)
    else:
        prepared = pipeline.prepare_dataset(spec, seed=seed, sample=sample)
    return LoadedData(prepared.name, prepared.schema, prepared.splits, prepared.preprocessor, prepared.report)


def load_streamed(spec: str, sample: int | None, preprocessor: Preprocessor | None = None) -> LoadedData:
    """Splits of a spec's Parquet files: training streamed, valid and test in memory."""
    from msmtrec.data.stream import stream_splits

    if sample is not None:
        raise ConfigError("--sample cannot be combined with --stream (a stream reads whole row groups)")
    data = stream_splits(spec, preprocessor=preprocessor)
    for name in ("train", "valid", "test"):
        if name not in data.splits:
            raise ConfigError(f"--stream {spec}: no {name!r} files after the split; write more Parquet shards")
    splits: dict[str, Any] = {"train": data.splits["train"]}
    splits.update({name: data.materialize(name) for name in ("valid", "test")})
    return LoadedData(data.preprocessor.spec.name, data.preprocessor.schema, splits, data.preprocessor)
