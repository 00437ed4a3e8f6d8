"""Extending a fitted preprocessor with a new time window's rows, for warm-start training.

Refitting the encoders on new data would renumber every category and make the trained embedding rows
meaningless. Extending keeps what the model learned addressable:

* vocabulary fields (and sequence vocabularies) keep every known value's code; values first seen in the
  new window (at least ``min_count`` times there) are appended after the old ones, most frequent first;
* hashed fields keep their buckets (a hash needs no vocabulary) and bucketised numbers keep their edges;
* dense normalisation statistics are kept (``dense="keep"``, the default: the model's input scale does not
  move under it) or refitted on the new window (``dense="update"``);
* a scenario first seen in the new window is appended after the known ones (its model parameters are
  initialised by :mod:`msmtrec.training.warm_start`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from msmtrec.data.encoders import DenseEncoder, HashEncoder, SequenceEncoder, VocabEncoder, to_numeric
from msmtrec.data.preprocessor import Preprocessor
from msmtrec.data.reader import SCENARIO_COL
from msmtrec.data.spec import DatasetSpec
from msmtrec.errors import ConfigError

DENSE_MODES = ("keep", "update")


@dataclass
class Extension:
    """What extending added: new vocabulary entries per field and new scenarios (in their new order)."""

    appended: dict[str, int] = field(default_factory=dict)
    new_scenarios: list[str] = field(default_factory=list)
    dense: str = "keep"

    def summary(self) -> str:
        grown = ", ".join(f"{k} +{v}" for k, v in self.appended.items() if v) or "none"
        scen = ", ".join(self.new_scenarios) or "none"
        return f"warm start: vocabulary grown: {grown}; new scenarios: {scen}; dense statistics: {self.dense}"


def check_compatible(old: DatasetSpec, new: DatasetSpec) -> None:
    """The new window must describe the same features and tasks, or the old weights mean nothing."""
    def shape(spec: DatasetSpec) -> tuple:
        f = spec.features
        return (
            [x.name for x in f.sparse], [x.name for x in f.dense], [x.name for x in f.sequence],
            [(t.name, t.type, t.inside) for t in spec.tasks],
        )

    for what, a, b in zip(("sparse features", "dense features", "sequence features", "tasks"),
                          shape(old), shape(new), strict=True):
        if a != b:
            raise ConfigError(f"--init-from: the new data's {what} differ from the parent run's: {b} vs {a}")


def extend_preprocessor(
    base: Preprocessor, spec: DatasetSpec, frame: pd.DataFrame, where: Callable[[object], str], dense: str = "keep"
) -> tuple[Preprocessor, Extension]:
    """A copy of ``base`` (read with ``spec``) whose encoders also cover ``frame`` (the new training rows)."""
    if dense not in DENSE_MODES:
        raise ConfigError(f"warm start: dense={dense!r} is not one of {list(DENSE_MODES)}")
    check_compatible(base.spec, spec)
    pre = copy.deepcopy(base)
    pre.spec = spec
    ext = Extension(dense=dense)
    for name, enc in pre.sparse.items():
        if isinstance(enc, VocabEncoder):
            ext.appended[name] = _append(enc, frame[name].dropna().astype(str).value_counts())
        elif isinstance(enc, HashEncoder):
            enc.add(frame[name])  # its ids are now seen in training: not counted as cold start
    for name, enc in pre.sequences.items():
        ext.appended[name] = _append(enc, enc.explode(frame[name]).value_counts())
    if dense == "update":
        for name, enc in pre.dense.items():
            x = to_numeric(frame[name], name, where).to_numpy()
            pre.dense[name] = DenseEncoder(transform_name=enc.transform_name, impute=enc.impute).fit(x)
    seen = set(pre.scenarios)
    values = frame[SCENARIO_COL].astype(str).unique()
    ext.new_scenarios = sorted(v for v in values if v not in seen)
    pre.scenarios = [*pre.scenarios, *ext.new_scenarios]
    pre.fitted_rows = len(frame)
    return pre, ext


def _append(enc: VocabEncoder | SequenceEncoder, counts: pd.Series) -> int:
    """Append values seen ``min_count`` times that the vocabulary lacks; known codes never move."""
    known = set(enc.vocabulary)
    fresh = [(str(k), int(c)) for k, c in counts.items() if c >= enc.min_count and str(k) not in known]
    fresh.sort(key=lambda kv: (-kv[1], kv[0]))
    enc.vocabulary = [*enc.vocabulary, *(k for k, _ in fresh)]
    return len(fresh)
