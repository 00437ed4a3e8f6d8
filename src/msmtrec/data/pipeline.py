"""From a spec to encoded train / valid / test tensors, with the encoders fitted on train only.

``prepare_dataset`` is the one preprocessing path in the library: the CLI, the trainer, the benchmark
and the tests all call it, so no script carries its own copy of the preprocessing.

The split is fixed by ``spec.split.seed`` (not by the training seed) so every model and every seed of a
benchmark sees the same rows in the same split, and the test split is never used to choose anything.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from msmtrec.data.dataset import TensorDataset
from msmtrec.data.expressions import evaluate
from msmtrec.data.preprocessor import (
    Preprocessor,
    file_checksum,
    line_locator,
)
from msmtrec.data.reader import SCENARIO_COL, SPLIT_COL, RawData, read_dataset
from msmtrec.data.schema import Schema
from msmtrec.data.spec import DatasetSpec, SplitSpec, load_spec
from msmtrec.errors import DataError

SPLITS = ("train", "valid", "test")


@dataclass
class PreparedData:
    """Encoded splits and everything needed to reproduce the encoding."""

    name: str
    spec: DatasetSpec
    preprocessor: Preprocessor
    splits: dict[str, TensorDataset]
    raw_labels: dict[str, np.ndarray] = field(default_factory=dict)
    """Untransformed targets per split (for reports in original units: dollars, milliseconds)."""
    report: dict = field(default_factory=dict)

    @property
    def schema(self) -> Schema:
        return self.preprocessor.schema


# ------------------------------------------------------------------------------------------------ split


def assign_splits(frame: pd.DataFrame, spec: DatasetSpec, where=None) -> np.ndarray:  # noqa: ANN001
    """An array of ``"train" | "valid" | "test"`` per row, following ``spec.split``."""
    s = spec.split
    n = len(frame)
    rng = np.random.default_rng(s.seed)
    if s.method == "files":
        given = frame[SPLIT_COL].to_numpy().copy()
        if not s.valid:  # hold out part of the training file(s), stratified by scenario
            train_idx = np.flatnonzero(given == "train")
            sub = frame.iloc[train_idx]
            frac = _fractions_by_rank(sub[SCENARIO_COL].to_numpy(), rng, s.stratify)
            given[train_idx[frac >= 1.0 - s.valid_fraction]] = "valid"
        return given
    if s.method == "time":
        col = s.time_column
        assert col is not None
        from msmtrec.data.encoders import to_numeric

        t = to_numeric(frame[col], col, where or (lambda i: f"row {i}")).to_numpy()
        order = np.argsort(t, kind="stable")
        pos = np.empty(n)
        pos[order] = np.arange(n) / max(n, 1)
    else:
        pos = _fractions_by_rank(frame[SCENARIO_COL].to_numpy(), rng, s.stratify)
    a, b = s.fractions[0], s.fractions[0] + s.fractions[1]
    return np.where(pos < a, "train", np.where(pos < b, "valid", "test"))


def _fractions_by_rank(groups: np.ndarray, rng: np.random.Generator, stratify: bool) -> np.ndarray:
    """A position in [0, 1) per row: its rank in a random order, within its group when stratifying."""
    n = len(groups)
    key = rng.random(n)
    if not stratify:
        order = np.argsort(key)
        pos = np.empty(n)
        pos[order] = np.arange(n) / max(n, 1)
        return pos
    codes, _ = pd.factorize(groups)
    order = np.lexsort((key, codes))
    sizes = np.bincount(codes)
    starts = np.cumsum(sizes) - sizes
    rank = np.arange(n) - starts[codes[order]]
    pos = np.empty(n)
    pos[order] = rank / sizes[codes[order]]
    return pos


# ---------------------------------------------------------------------------------------------- prepare


def read_and_filter(spec: DatasetSpec, data_root: str | Path | None = None) -> RawData:
    """Read all rows and apply the spec's filter, counting what it drops."""
    raw = read_dataset(spec, data_root)
    if spec.filter:
        keep = evaluate(spec.filter, raw.frame, f"{spec.origin}: filter").fillna(False).astype(bool)
        dropped = int((~keep).sum())
        raw.dropped["filter"] = dropped
        raw.frame = raw.frame[keep.to_numpy()]
        if raw.frame.empty:
            raise DataError(f"{spec.origin}: filter {spec.filter!r} removed every row")
    return raw


def read_like_spec(spec: DatasetSpec, path: str | Path, data_root: str | Path | None = None) -> RawData:
    """Rows of one raw file, read and filtered exactly as ``spec`` reads its own files.

    Evaluating a trained run on a new file must score the population it was trained on: the same columns,
    separator, encoding, structure checks and ``filter`` (dropped rows are counted in ``dropped``).
    """
    files = dataclasses.replace(spec.files, path=str(Path(path).resolve()), format="auto")
    return read_and_filter(dataclasses.replace(spec, files=files, split=SplitSpec()), data_root)


def prepare_dataset(
    spec: str | Path | DatasetSpec,
    seed: int = 0,
    sample: int | None = None,
    data_root: str | Path | None = None,
    overrides: dict | None = None,
    extend: Preprocessor | None = None,
    extend_dense: str = "keep",
) -> PreparedData:
    """Read, filter, split, fit encoders on train, and encode every split.

    ``sample`` keeps a random subset of that many rows (stratified by scenario, drawn with ``seed``)
    before splitting — for quick runs; the report says how many rows were left out. With ``extend`` (a
    parent run's preprocessor, for warm-start training) the encoders are extended with the new training
    rows instead of refitted, so known categories keep their codes (:mod:`msmtrec.data.extend`).
    """
    spec = load_spec(spec, overrides)
    raw = read_and_filter(spec, data_root)
    frame = raw.frame
    if sample is not None and sample < len(frame):
        pos = _fractions_by_rank(frame[SCENARIO_COL].to_numpy(), np.random.default_rng(seed), True)
        keep = pos < sample / len(frame)
        raw.dropped["sample"] = int((~keep).sum())
        frame = frame[keep]
    where = line_locator(frame, raw.files)
    split = assign_splits(frame, spec, where)
    train = frame[split == "train"]
    if train.empty:
        raise DataError(f"{spec.origin}: the training split is empty (split {spec.split.method})")
    extension = None
    if extend is not None:
        from msmtrec.data.extend import extend_preprocessor

        pre, extension = extend_preprocessor(extend, spec, train, where, extend_dense)
    else:
        pre = Preprocessor(spec).fit(train, where)
    pre.source_checksum = file_checksum(raw.files)
    splits, raw_labels, reports = {}, {}, {}
    for name in SPLITS:
        part = frame[split == name]
        if part.empty:
            raise DataError(f"{spec.origin}: the {name} split is empty; check split.fractions or the split files")
        batch, rep = pre.transform(part, with_labels=True, where=where)
        splits[name] = TensorDataset(batch)
        raw_labels[name] = pre.labels(part, where, transformed=False)
        reports[name] = rep
    funnel = _funnel_violations(spec, raw_labels)
    report = {
        "files": raw.files,
        "rows_read": len(raw.frame) + raw.dropped.get("filter", 0),
        "dropped": raw.dropped,
        "rows": {k: len(v) for k, v in splits.items()},
        "oov": {k: v.oov for k, v in reports.items()},
        "imputed": {k: v.imputed for k, v in reports.items()},
        "missing": {c: int(frame[c].isna().sum()) for c in frame.columns if not c.startswith("__")},
        "non_finite": non_finite_counts(frame),
        "funnel_violations": funnel,
    }
    if extension is not None:
        report["extension"] = {"appended": extension.appended, "new_scenarios": extension.new_scenarios,
                               "dense": extension.dense}
    return PreparedData(spec.name, spec, pre, splits, raw_labels, report)


def non_finite_counts(frame: pd.DataFrame) -> dict[str, int]:
    """``inf`` / ``-inf`` per numeric column: imputed like missing values, so reported beside them."""
    out = {}
    for c in frame.columns:
        if not c.startswith("__") and pd.api.types.is_float_dtype(frame[c]):
            n = int(np.isinf(frame[c].to_numpy()).sum())
            if n:
                out[c] = n
    return out


def data_notes(report: dict) -> list[str]:
    """One line each for rows skipped or dropped and for imputed values: what ``prepare`` and ``train`` print."""
    notes = [f"dropped on purpose ({reason}): {n:,} rows" for reason, n in report.get("dropped", {}).items()]
    missing = {c: n for c, n in report.get("missing", {}).items() if n}
    non_finite = report.get("non_finite", {})
    if missing:
        notes.append("missing values: " + ", ".join(f"{c} {n:,}" for c, n in sorted(missing.items())))
    if non_finite:
        counts = ", ".join(f"{c} {n:,}" for c, n in non_finite.items())
        notes.append(f"non-finite numbers (inf/-inf, imputed): {counts}")
    return notes


def _funnel_violations(spec: DatasetSpec, raw_labels: dict[str, np.ndarray]) -> dict[str, int]:
    """Rows where a funnel task is positive but its parent is not (ESMM assumes there are none)."""
    names = [t.name for t in spec.tasks]
    out = {}
    for j, t in enumerate(spec.tasks):
        if t.inside:
            p = names.index(t.inside)
            out[t.name] = int(sum(((y[:, j] > 0) & (y[:, p] <= 0)).sum() for y in raw_labels.values()))
    return out


# ------------------------------------------------------------------------------------- save and reload


def save_prepared(prepared: PreparedData, out: str | Path) -> Path:
    """Write ``preprocessor.json``, ``{split}.npz`` and ``report.json`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prepared.preprocessor.save(out)
    for name, ds in prepared.splits.items():
        arrays = {k.replace(":", "__"): v.numpy() for k, v in ds.tensors.items()}
        arrays["raw_labels"] = prepared.raw_labels[name]
        np.savez(out / f"{name}.npz", **arrays)
    (out / "report.json").write_text(json.dumps(prepared.report, indent=1, default=str))
    return out


def load_prepared(directory: str | Path) -> PreparedData:
    """Reload what :func:`save_prepared` wrote (no source data needed)."""
    directory = Path(directory)
    pre = Preprocessor.load(directory)
    splits, raw_labels = {}, {}
    for name in SPLITS:
        path = directory / f"{name}.npz"
        if not path.exists():
            raise DataError(f"{path}: missing; expected the output of `msmtrec data prepare`")
        with np.load(path) as z:
            tensors = {k.replace("__", ":"): torch.from_numpy(z[k]) for k in z.files if k != "raw_labels"}
            raw_labels[name] = z["raw_labels"]
        splits[name] = TensorDataset(tensors)
    report_path = directory / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return PreparedData(pre.spec.name, pre.spec, pre, splits, raw_labels, report)
