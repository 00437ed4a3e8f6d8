"""The preprocessing artifact: encoders fitted on the training split, saved as readable JSON.

Training writes ``preprocessor.json`` into the run folder; evaluation, export, batch prediction and the
HTTP service load the same file, so a model always sees exactly the transform it was trained with.
The file holds the spec, every vocabulary and normalisation statistic, the scenario list, the model-facing
:class:`~msmtrec.data.schema.Schema`, the library version and a checksum of the source files.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from msmtrec import __version__
from msmtrec.atomic import write_text_atomic
from msmtrec.data.encoders import (
    BucketEncoder,
    DenseEncoder,
    Encoder,
    HashEncoder,
    SequenceEncoder,
    VocabEncoder,
    encoder_from_dict,
    to_numeric,
)
from msmtrec.data.expressions import evaluate, is_plain_column
from msmtrec.data.reader import FILE_COL, LINE_COL, SCENARIO_COL, to_text
from msmtrec.data.schema import Batch, Schema, SequenceField, SparseField, Task
from msmtrec.data.spec import DatasetSpec, spec_from_dict, spec_to_dict
from msmtrec.errors import DataError
from msmtrec.tasks import kind_of

ARTIFACT_NAME = "preprocessor.json"

Column = np.ndarray | pd.Series
"""One feature's values for :meth:`Preprocessor.encode`: ``rows`` values or one shared value."""


def _default_where(i: object) -> str:
    return f"row {i}"


@dataclass
class TransformReport:
    """What the transform did that a user should know about: OOV and imputed counts per column."""

    rows: int = 0
    oov: dict[str, int] = field(default_factory=dict)
    imputed: dict[str, int] = field(default_factory=dict)

    def merge(self, other: TransformReport) -> None:
        self.rows += other.rows
        for mine, theirs in ((self.oov, other.oov), (self.imputed, other.imputed)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v


class ScenarioNames:
    """The scenarios of a run: raw values (as in the data files), display names (``scenario.names`` in the
    spec) and indices (what the model sees). A request may name a scenario by value, display name or a number
    equal to the value; everything else is a :class:`DataError` listing the known scenarios."""

    def __init__(self, values: Sequence[str], names: Mapping[str, str] | None = None) -> None:
        self.values: tuple[str, ...] = tuple(values)
        names = names or {}
        self.display: tuple[str, ...] = tuple(names.get(v, v) for v in self.values)
        index = {d: i for i, d in enumerate(self.display)}
        index.update({v: i for i, v in enumerate(self.values)})  # a raw value wins over a display name
        self._index = index

    def index(self, scenario: Any) -> int:
        """The index of a request's scenario (raw value, display name, or a number equal to a raw value)."""
        key = text_value(scenario) if type(scenario) is not str else scenario
        if type(scenario) is bool or key is None or key not in self._index:
            raise DataError(f"scenario {scenario!r} was never seen in training; the model knows {list(self.display)}")
        return self._index[key]


def text_value(v: Any) -> str | None:
    """A raw categorical value as the reader would have stored it (3, 3.0 and "3" are one category)."""
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return None
        return str(int(v)) if v.is_integer() else str(v)
    return str(v)


def stable_id(values: pd.Series) -> np.ndarray:
    """A stable int64 per raw id value (for GAUC grouping and ranking), independent of any vocabulary."""
    return pd.util.hash_array(values.fillna("").astype(str).to_numpy(dtype=object)).view(np.int64)


class Preprocessor:
    """Fit on training rows; transform any rows (training, evaluation or raw serving records)."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.sparse: dict[str, VocabEncoder | HashEncoder | BucketEncoder] = {}
        self.dense: dict[str, DenseEncoder] = {}
        self.sequences: dict[str, SequenceEncoder] = {}
        self.scenarios: list[str] = []
        self.source_checksum: str = ""
        self.fitted_rows: int = 0
        self.version = __version__

    # ------------------------------------------------------------------------------------------ fitting

    def fit(self, frame: pd.DataFrame, where=_default_where) -> Preprocessor:  # noqa: ANN001
        """Fit every encoder on ``frame`` (the training split only)."""
        spec = self.spec
        for f in spec.features.sparse:
            enc = HashEncoder(f.hash_buckets) if f.hash_buckets else VocabEncoder(min_count=f.min_count)
            self.sparse[f.name] = enc.fit(frame[f.name])
        for f in spec.features.dense:
            x = to_numeric(frame[f.name], f.name, where).to_numpy()
            if f.transform == "bucketize":
                self.sparse[f.name] = BucketEncoder(buckets=f.buckets).fit(x)
            else:
                self.dense[f.name] = DenseEncoder(transform_name=f.transform, impute=f.impute).fit(x)
        for f in spec.features.sequence:
            self.sequences[f.name] = SequenceEncoder(f.sep, f.max_len, f.min_count).fit(frame[f.name])
        self.scenarios = sorted(frame[SCENARIO_COL].astype(str).unique(), key=natural_key)
        self.fitted_rows = len(frame)
        return self

    @property
    def scenario_names(self) -> ScenarioNames:
        """The scenarios by raw value, display name and index (the one place that maps between them)."""
        return ScenarioNames(self.scenarios, self.spec.scenario.names)

    @property
    def schema(self) -> Schema:
        spec = self.spec
        sparse = []
        for name, enc in self.sparse.items():
            source = {"vocab": "categorical", "hash": "hashed", "bucket": "bucketised"}[enc.kind]
            sparse.append(SparseField(name, enc.vocab_size, source))  # type: ignore[arg-type]
        return Schema(
            sparse=tuple(sparse),
            dense=tuple(self.dense),
            sequences=tuple(SequenceField(n, e.vocab_size, e.max_len) for n, e in self.sequences.items()),
            scenarios=self.scenario_names.display,
            tasks=tuple(Task(t.name, t.type, t.inside, t.weight, t.transform) for t in spec.tasks),
            user_id=spec.features.user_id,
            item_id=spec.features.item_id,
            extra={"dataset": spec.name, "scenario_values": list(self.scenarios)},
        )

    # ---------------------------------------------------------------------------------------- transform

    def scenario_codes(self, values: pd.Series, where=_default_where) -> np.ndarray:  # noqa: ANN001
        """Scenario values → indices; a value never seen in training is an error naming it."""
        codes = pd.Index(self.scenarios, dtype=object).get_indexer(values.astype(str)).astype(np.int64)
        if (codes < 0).any():
            i = values.index[np.flatnonzero(codes < 0)[0]]
            unseen = sorted(set(values.astype(str)[codes < 0]))[:5]
            col = self.spec.scenario.column or "scenario"
            raise DataError(
                f"{where(i)}: scenario {values.loc[i]!r} in column {col!r} was never seen in training "
                f"(unseen: {unseen}); the model knows {self.scenarios}"
            )
        return codes

    def transform(
        self,
        frame: pd.DataFrame,
        with_labels: bool = True,
        where=_default_where,  # noqa: ANN001
    ) -> tuple[Batch, TransformReport]:
        """Rows → a :data:`Batch` of tensors, plus counts of OOV values and imputed numbers."""
        missing = [c for c in self.required_columns(with_labels) if c not in frame.columns]
        if missing:
            raise DataError(f"input is missing column(s) {missing}")
        columns: dict[str, Column] = {}
        for name, enc in self.sparse.items():
            if isinstance(enc, BucketEncoder):
                columns[name] = to_numeric(frame[name], name, where).to_numpy()
            else:
                columns[name] = _as_text(frame[name])
        for name in self.dense:
            columns[name] = to_numeric(frame[name], name, where).to_numpy()
        for name in self.sequences:
            columns[name] = frame[name]
        scen = frame[SCENARIO_COL] if SCENARIO_COL in frame.columns else self._scenario_series(frame)
        batch, report = self.encode(columns, self.scenario_codes(scen, where), len(frame))
        for key, col in (("user_id", self.spec.features.user_id), ("item_id", self.spec.features.item_id)):
            if col and col in frame.columns:
                batch[key] = torch.from_numpy(stable_id(frame[col]))
        if with_labels:
            batch["labels"] = torch.from_numpy(self.labels(frame, where))
        return batch, report

    def encode(self, columns: Mapping[str, Column], scenario: np.ndarray, rows: int) -> tuple[Batch, TransformReport]:
        """Checked feature columns → the model's tensors; the one encoding both paths share.

        ``transform`` calls it with the columns of a frame; the service calls it straight from request
        values, so scoring a page of candidates never builds a DataFrame. Each column holds ``rows``
        values, or exactly one value shared by every row (a user's context feature): that one is encoded
        once and repeated, and its OOV / imputed count is multiplied by ``rows`` as if it had been
        repeated before encoding. Categorical columns hold text (``None`` = missing), numeric ones
        float64 (NaN = missing), sequence ones separator-joined text. ``scenario`` holds codes into
        :attr:`scenarios`, one per row or one for all.
        """
        report = TransformReport(rows=rows)
        sparse_cols = []
        for name, enc in self.sparse.items():
            codes, count = _encode_column(enc, columns[name], rows, name)
            (report.imputed if isinstance(enc, BucketEncoder) else report.oov)[name] = count
            sparse_cols.append(codes)
        dense_cols = []
        for name, enc in self.dense.items():
            values, count = _encode_column(enc, columns[name], rows, name)
            report.imputed[name] = count
            dense_cols.append(values)
        batch: Batch = {
            "sparse": torch.from_numpy(_stack(sparse_cols, rows, np.int64)),
            "dense": torch.from_numpy(_stack(dense_cols, rows, np.float32)),
        }
        for name, enc in self.sequences.items():
            codes, count = _encode_column(enc, columns[name], rows, name)
            report.oov[name] = count
            batch[f"seq:{name}"] = torch.from_numpy(codes)
        scenario = np.asarray(scenario, dtype=np.int64)
        if scenario.shape != (rows,):
            scenario = np.broadcast_to(scenario, (rows,)).copy()
        batch["scenario"] = torch.from_numpy(scenario)
        return batch, report

    def _scenario_series(self, frame: pd.DataFrame) -> pd.Series:
        col = self.spec.scenario.column
        if col and col in frame.columns:
            return frame[col]
        if "scenario" in frame.columns:
            return frame["scenario"]
        if self.spec.scenario.default is not None:
            return pd.Series([self.spec.scenario.default] * len(frame), index=frame.index)
        raise DataError(f"input has no scenario: expected a column {col or 'scenario'!r}")

    def required_columns(self, with_labels: bool = False) -> list[str]:
        """Feature columns every input must have (plus label columns when ``with_labels``)."""
        from msmtrec.data.expressions import referenced_columns

        f = self.spec.features
        cols = [x.name for x in f.sparse] + [x.name for x in f.dense] + [x.name for x in f.sequence]
        if with_labels:
            for t in self.spec.tasks:
                cols += referenced_columns(t.label)
        return list(dict.fromkeys(cols))

    def labels(self, frame: pd.DataFrame, where=_default_where, transformed: bool = True) -> np.ndarray:  # noqa: ANN001
        """Task targets ``[n, n_tasks]`` (float32), checked and encoded by each task's kind."""
        out = np.zeros((len(frame), len(self.spec.tasks)), dtype=np.float32)
        for j, t in enumerate(self.spec.tasks):
            key = f"tasks[{t.name}].label"
            if is_plain_column(t.label):
                col = t.label.strip("`")
                values = to_numeric(frame[col], col, where)
            else:
                col = t.label
                values = evaluate(t.label, frame, key).astype(np.float64)
            if values.isna().any():
                i = values.index[values.isna().to_numpy()][0]
                raise DataError(f"{where(i)}: label {col!r} of task {t.name!r} is missing")
            x = values.to_numpy()
            kind = kind_of(t)
            bad, expected = kind.invalid_labels(x, t.transform)
            if bad.any():
                i = values.index[np.flatnonzero(bad)[0]]
                shown = frame[col].loc[i] if col in frame.columns else x[bad][0]
                raise DataError(
                    f"{where(i)}: label {col!r} of {kind.name} task {t.name!r} {expected}, got {_show(shown)} "
                    f"({int(bad.sum())} such row(s))"
                )
            if transformed:
                x = kind.encode_labels(x, t.transform)
            out[:, j] = x
        return out

    # ----------------------------------------------------------------------------------------- storage

    def to_dict(self) -> dict:
        return {
            "format": "msmtrec-preprocessor/1",
            "version": self.version,
            "dataset": self.spec.name,
            "source_checksum": self.source_checksum,
            "fitted_rows": self.fitted_rows,
            "scenarios": self.scenarios,
            "schema": self.schema.to_dict(),
            "spec": spec_to_dict(self.spec),
            "encoders": {
                "sparse": {k: asdict(v) for k, v in self.sparse.items()},
                "dense": {k: asdict(v) for k, v in self.dense.items()},
                "sequences": {k: asdict(v) for k, v in self.sequences.items()},
            },
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/preprocessor.json`` atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / ARTIFACT_NAME
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessor:
        if d.get("format") != "msmtrec-preprocessor/1":
            raise DataError(f"not an msmtrec preprocessing artifact (format {d.get('format')!r})")
        p = cls(spec_from_dict(d["spec"]))
        p.sparse = {k: encoder_from_dict(v) for k, v in d["encoders"]["sparse"].items()}
        p.dense = {k: encoder_from_dict(v) for k, v in d["encoders"]["dense"].items()}
        p.sequences = {k: encoder_from_dict(v) for k, v in d["encoders"]["sequences"].items()}
        p.scenarios = list(d["scenarios"])
        p.source_checksum = d.get("source_checksum", "")
        p.fitted_rows = int(d.get("fitted_rows", 0))
        p.version = d.get("version", "")
        return p

    @classmethod
    def load(cls, path: str | Path) -> Preprocessor:
        """Load from a run folder or a ``preprocessor.json`` path."""
        path = Path(path)
        if path.is_dir():
            path = path / ARTIFACT_NAME
        if not path.exists():
            raise DataError(f"{path}: no preprocessing artifact here (expected {ARTIFACT_NAME})")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError) as e:
            raise DataError(f"{path}: damaged preprocessing artifact: {e}") from None


def _encode_column(enc: Encoder, values: Column, rows: int, name: str) -> tuple[np.ndarray, int]:
    """Encode one column; a single shared value is encoded once and repeated ``rows`` times."""
    if len(values) == rows:
        return enc.transform(values)
    if len(values) != 1:
        raise DataError(f"feature {name!r} has {len(values)} values for {rows} rows (expected {rows} or 1)")
    codes, count = enc.transform(values)
    return np.repeat(codes, rows, axis=0), count * rows


def _stack(columns: list[np.ndarray], rows: int, dtype: type) -> np.ndarray:
    return np.stack(columns, 1) if columns else np.zeros((rows, 0), dtype)


def _as_text(s: pd.Series) -> pd.Series:
    if s.dtype == object or isinstance(s.dtype, pd.StringDtype):
        return s
    return to_text(s)


def natural_key(s: str) -> tuple:
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


def file_checksum(paths: list[str]) -> str:
    """sha256 over the source files' bytes (in order), so an artifact says exactly what it was fit on."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def line_locator(frame: pd.DataFrame, files: list[str]):  # noqa: ANN201
    """A ``where(index) -> "file:line"`` function for error messages."""
    def where(i: object) -> str:
        r = frame.loc[i]
        return f"{files[int(r[FILE_COL])]}:{int(r[LINE_COL])}"

    return where


def _show(v: object) -> str:
    """A value as the user wrote it: ``2`` not ``np.int64(2)``, ``'x'`` for text."""
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
