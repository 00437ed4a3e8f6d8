"""Dataset specs: a small YAML file says where the data is and what each column means.

Shipped specs live in ``msmtrec/data/specs/*.yaml`` and are addressed by name (``hillstrom``); users pass a
path to their own. Every key is checked: an unknown key, a missing required key or a value of the wrong
kind raises :class:`~msmtrec.errors.SpecError` naming the spec file and the key, because a typo silently
ignored would give a quietly different experiment.

Relative data paths are resolved against the data root: ``--data-root``, else ``$MSMTREC_DATA``, else the
first of ``./shared/data`` and ``../shared/data`` that exists (the layout of a checkout with ``shared/``
beside it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from msmtrec.config import build_config
from msmtrec.errors import SpecError
from msmtrec.shipped import resolve_yaml, shipped_names
from msmtrec.tasks import get_kind, registered_kinds

SPEC_DIR = Path(__file__).parent / "specs"


@dataclass
class FileSpec:
    """Where the rows are. ``path`` may be one file or a glob; ``.gz`` CSVs and Parquet are read too."""

    path: str | list[str] = ""
    format: Literal["auto", "csv", "parquet"] = "auto"
    header: bool = True
    columns: list[str] | None = None
    """Column names for headerless files (``header: false``)."""
    columns_file: str | None = None
    """Alternatively, a text file with one column name per line (relative to the data root)."""
    sep: str = ","
    na_values: list[str] = field(default_factory=lambda: ["", "NA", "NaN", "nan", "null", "?"])
    scenario_pattern: str | None = None
    """Regex with a ``(?P<scenario>...)`` group: take the scenario from each file's path."""
    encoding: str = "utf-8"
    """Text encoding of CSV files (``latin-1``, ``cp1252``, ...); a byte it cannot decode is an error."""
    bad_rows: Literal["error", "skip"] = "error"
    """A CSV row whose field count differs from the header's: stop with an error naming the line, or skip
    it (skipped rows are counted and reported by ``data inspect``, ``data prepare`` and ``train``)."""


@dataclass
class ScenarioSpec:
    column: str | None = None
    """Column holding the scenario; omit when the scenario comes from file names or is constant."""
    names: dict[str, str] | None = None
    """Optional display names for scenario values (``{"1": "home"}``)."""
    default: str | None = None
    """Scenario used when there is no column and no file-name match (single-scenario data)."""


@dataclass
class TaskSpec:
    name: str = ""
    label: str = ""
    """A column name or an expression over columns, e.g. ``income_50k == "50000+."``."""
    type: str = "binary"
    """The task's kind: ``binary``, ``regression`` or ``ziln`` (zero-inflated log-normal value, e.g. spend)."""
    inside: str | None = None
    """Parent task of a funnel: this task can only be positive where the parent is."""
    transform: Literal["none", "log1p"] = "none"
    """Target transform for regression (log1p for spend or dwell time)."""
    weight: float = 1.0


@dataclass
class SparseSpec:
    name: str = ""
    min_count: int = 1
    """Values seen fewer times in training go to the out-of-vocabulary bucket (code 0)."""
    hash_buckets: int | None = None
    """Hash into this many buckets instead of a vocabulary (for huge id spaces)."""
    role: Literal["feature", "user_id", "item_id"] = "feature"


@dataclass
class DenseSpec:
    name: str = ""
    transform: Literal["standardize", "log1p", "none", "bucketize"] = "standardize"
    """``log1p`` is log1p then standardise; ``bucketize`` turns the column into a sparse field of quantiles."""
    buckets: int = 10
    impute: Literal["median", "mean", "zero"] = "median"


@dataclass
class SequenceSpec:
    name: str = ""
    sep: str = "|"
    max_len: int = 20
    min_count: int = 1


@dataclass
class FeatureSpec:
    sparse: list[SparseSpec] = field(default_factory=list)
    dense: list[DenseSpec] = field(default_factory=list)
    sequence: list[SequenceSpec] = field(default_factory=list)
    user_id: str | None = None
    """Column of user ids (used for GAUC; not a feature unless also listed under sparse)."""
    item_id: str | None = None


@dataclass
class SplitSpec:
    method: Literal["random", "time", "files"] = "random"
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    stratify: bool = True
    """Random split within each scenario, so every scenario keeps its share in every split."""
    seed: int = 2024
    time_column: str | None = None
    train: str | list[str] | None = None
    valid: str | list[str] | None = None
    test: str | list[str] | None = None
    valid_fraction: float = 0.1
    """With ``files`` and no valid file: the share of the training file(s) held out for validation."""


@dataclass
class DatasetSpec:
    name: str = ""
    description: str = ""
    source: str = ""
    """Where the full data is published and how to get it (shown by ``data inspect``)."""
    files: FileSpec = field(default_factory=FileSpec)
    scenario: ScenarioSpec = field(default_factory=ScenarioSpec)
    tasks: list[TaskSpec] = field(default_factory=list)
    features: FeatureSpec = field(default_factory=FeatureSpec)
    filter: str | None = None
    """Keep rows where this expression is true; dropped rows are counted and reported."""
    split: SplitSpec = field(default_factory=SplitSpec)
    origin: str = ""
    """The spec file this was read from (filled in by the loader, for error messages)."""


# ----------------------------------------------------------------------------------------------- parsing


def _build(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass ``cls`` from YAML data with the library's one config engine (spec errors)."""
    return build_config(cls, raw, where, error=SpecError)


def _set_path(raw: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise SpecError(f"override {dotted!r}: {k!r} is not a mapping")
    node[keys[-1]] = yaml.safe_load(value) if isinstance(value, str) else value


def shipped_specs() -> list[str]:
    return shipped_names(SPEC_DIR)


def resolve_spec_path(spec: str | Path) -> Path:
    """A shipped spec name or a path to a YAML file."""
    return resolve_yaml(spec, SPEC_DIR, "dataset spec", SpecError)


def load_spec(spec: str | Path | DatasetSpec, overrides: dict[str, Any] | None = None) -> DatasetSpec:
    """Read and validate a spec; ``overrides`` maps dotted keys (``split.seed``) to new values."""
    if isinstance(spec, DatasetSpec):
        if overrides:
            raise SpecError("overrides need a spec name or path, not a DatasetSpec object")
        return spec
    path = resolve_spec_path(spec)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    for k, v in (overrides or {}).items():
        _set_path(raw, k, v)
    out = _build(DatasetSpec, raw, str(path))
    out.origin = str(path)
    if not out.name:
        out.name = path.stem
    _check(out)
    return out


def spec_to_dict(spec: DatasetSpec) -> dict:
    from dataclasses import asdict

    d = asdict(spec)
    d.pop("origin", None)
    return d


def spec_from_dict(d: dict, where: str = "artifact spec") -> DatasetSpec:
    out = _build(DatasetSpec, d, where)
    _check(out)
    return out


def _check_funnel_acyclic(tasks: Sequence[TaskSpec], where: str) -> None:
    """A funnel is a chain of ``inside`` links; a loop (a inside b inside a) has no exposure-space meaning."""
    parent = {t.name: t.inside for t in tasks}
    for t in tasks:
        seen = [t.name]
        node = t.inside
        while node:
            if node in seen:
                raise SpecError(f"{where}: task {t.name!r}: the funnel loops ({' inside '.join([*seen, node])})")
            seen.append(node)
            node = parent.get(node)


def _check(spec: DatasetSpec) -> None:
    where = spec.origin or spec.name
    if not spec.tasks:
        raise SpecError(f"{where}: tasks: at least one task is required")
    names = [t.name for t in spec.tasks]
    for t in spec.tasks:
        if not t.name or not t.label:
            raise SpecError(f"{where}: tasks: every task needs a name and a label, got {t}")
        if t.inside and t.inside not in names:
            raise SpecError(f"{where}: task {t.name!r} is inside {t.inside!r}, which is not a task ({names})")
        if t.type not in registered_kinds():
            raise SpecError(f"{where}: task {t.name!r}: type {t.type!r} is not one of {registered_kinds()}")
        kind = get_kind(t.type)
        if t.inside and not kind.probability:
            raise SpecError(f"{where}: task {t.name!r}: only binary tasks can be inside a funnel")
        if t.transform not in kind.transforms:
            raise SpecError(f"{where}: task {t.name!r}: a {t.type} task takes transform {list(kind.transforms)}, "
                            f"got {t.transform!r}")
    if len(set(names)) != len(names):
        raise SpecError(f"{where}: duplicate task names {names}")
    _check_funnel_acyclic(spec.tasks, where)
    feats = [f.name for f in spec.features.sparse] + [f.name for f in spec.features.dense]
    feats += [f.name for f in spec.features.sequence]
    dup = sorted({f for f in feats if feats.count(f) > 1})
    if dup:
        raise SpecError(f"{where}: features listed twice: {dup}")
    if not feats:
        raise SpecError(f"{where}: features: at least one sparse, dense or sequence feature is required")
    fr = spec.split.fractions
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise SpecError(f"{where}: split.fractions must be three non-negative numbers summing to 1, got {fr}")
    if spec.split.method == "time" and not spec.split.time_column:
        raise SpecError(f"{where}: split.method time needs split.time_column")
    if spec.split.method == "files" and not spec.split.train:
        raise SpecError(f"{where}: split.method files needs split.train (and optionally valid, test)")
    if spec.split.method != "files" and not spec.files.path:
        raise SpecError(f"{where}: files.path is required")


def data_root(explicit: str | Path | None = None) -> Path:
    """Where relative data paths point: explicit, ``$MSMTREC_DATA``, ``./shared/data`` or ``../shared/data``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("MSMTREC_DATA")
    if env:
        return Path(env)
    for cand in (Path("shared/data"), Path("../shared/data")):
        if cand.is_dir():
            return cand
    # a checkout used from elsewhere: <repo>/src/msmtrec/data/spec.py → <repo>/../shared/data
    repo = Path(__file__).resolve().parents[3]
    for cand in (repo / "shared" / "data", repo.parent / "shared" / "data"):
        if cand.is_dir():
            return cand
    return Path(".")
