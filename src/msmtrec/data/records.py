"""Raw request values → the model's batch: the service's side of :meth:`Preprocessor.encode`.

Training turns a DataFrame into columns and calls :meth:`Preprocessor.encode`; the service turns request
values (rows of dicts merged with a shared context, or one list per feature) into the same columns and calls
the same method, so a request is encoded exactly as training encoded its rows, without building a frame.

Feature values are checked here, once, while they are converted (the request schema leaves them untyped so
no value is touched twice): a categorical value must be text, a number, a boolean or null; a numeric value a
finite number, a numeric string or null (``true`` is not a number); only sequence features take lists.
Every problem is a :class:`FeatureError` naming the request part, row and feature.

Scenarios are resolved by :class:`~msmtrec.data.preprocessor.ScenarioNames`, the one owner of the raw value ↔
display name ↔ index mapping.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from msmtrec.data.preprocessor import Preprocessor, TransformReport, text_value
from msmtrec.data.schema import Batch
from msmtrec.errors import DataError

MISSING = object()
"""Sentinel for a feature absent from a request (distinct from an explicit null, which means 'missing value')."""

SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
"""Python types a single feature value may have (after JSON parsing)."""


class FeatureError(DataError):
    """A request row lacks a required feature or has a value of the wrong kind (names row and feature)."""

    def __init__(self, what: str, index: int | None, column: str, problem: str) -> None:
        self.what, self.index, self.column = what, index, column
        where = what if index is None else f"{what}[{index}]"
        super().__init__(f"{where}: {problem} {column!r}")


Locate = Callable[[int], tuple[str, int | None]]
"""Row index in a column → (request part, row) to name in an error; row ``None`` for the shared context."""


class RecordEncoder:
    """Encodes request values with a fitted :class:`Preprocessor` (see the module docstring)."""

    def __init__(self, pre: Preprocessor) -> None:
        self.pre = pre
        spec = pre.spec
        self.required = pre.required_columns(with_labels=False)
        self.sequence_sep = {f.name: f.sep for f in spec.features.sequence}
        self.categorical = {f.name for f in spec.features.sparse}
        self.scenarios = pre.scenario_names

    def encode_records(
        self,
        scenario: Any,
        rows: Sequence[Mapping[str, Any]],
        context: Mapping[str, Any] | None = None,
        what: str = "records",
    ) -> tuple[Batch, TransformReport]:
        """Request rows merged with shared context → the model's batch, without building a DataFrame.

        Each required feature is taken from the row if present, else from ``context``; a feature in
        neither, or a value of the wrong kind, is a :class:`FeatureError` naming the row and feature. A
        feature only the context has is converted and encoded once, then repeated. ``scenario`` is
        anything :meth:`ScenarioNames.index` accepts.
        """
        ctx = context or {}
        for row_index, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise FeatureError(what, row_index, "", "expected an object of features, got " + _kind(row))
        in_rows = set().union(*rows) if ctx else set()  # keys any row has (one C-level pass over all rows)
        columns: dict[str, np.ndarray] = {}
        for col in self.required:
            shared = ctx.get(col, MISSING)
            if shared is not MISSING and col not in in_rows:
                columns[col] = self.column(col, [shared], _in_context)
                continue
            values = [r.get(col, shared) for r in rows]
            if shared is MISSING:
                for i, v in enumerate(values):
                    if v is MISSING:
                        raise FeatureError(what, i, col, "missing required feature")

            def locate(i: int, col: str = col) -> tuple[str, int | None]:
                return ("context", None) if col in ctx and col not in rows[i] else (what, i)

            columns[col] = self.column(col, values, locate)
        return self.pre.encode(columns, self.scenario_code(scenario), len(rows))

    def encode_columns(
        self,
        scenario: Any,
        features: Mapping[str, Sequence[Any]],
        rows: int,
        context: Mapping[str, Any] | None = None,
        what: str = "candidate_columns",
    ) -> tuple[Batch, TransformReport]:
        """Columnar request values (one list of ``rows`` values per feature) plus shared context → batch.

        A feature column wins over the context; a feature in neither, a column of the wrong length or a
        value of the wrong kind is a :class:`FeatureError` naming the feature (and row).
        """
        ctx = context or {}
        columns: dict[str, np.ndarray] = {}
        for col in self.required:
            if col in features:
                values = features[col]
                if not isinstance(values, list):
                    raise FeatureError(what, None, col, f"expected a list of {rows} values, got {_kind(values)}, "
                                                        "for feature")
                if len(values) != rows:
                    raise FeatureError(what, None, col, f"has {len(values)} values, expected {rows}, in feature")
                columns[col] = self.column(col, values, lambda i: (what, i))
            elif col in ctx:
                columns[col] = self.column(col, [ctx[col]], _in_context)
            else:
                raise FeatureError(what, None, col, "missing required feature")
        return self.pre.encode(columns, self.scenario_code(scenario), rows)

    def column(self, col: str, values: list[Any], locate: Locate) -> np.ndarray:
        """Raw request values of one feature → the array :meth:`Preprocessor.encode` takes, checking each
        value's kind on the way (one pass over the values)."""
        sep = self.sequence_sep.get(col)
        if sep is not None:
            return _text_column([_sequence_text(v, sep, col, i, locate) for i, v in enumerate(values)])
        if col in self.categorical:
            types = set(map(type, values))
            if types == {str}:
                return _text_column(values)
            if not types <= SCALAR_TYPES or float in types:
                _raise_first(values, col, locate, _is_scalar, "expected one value, got")
            return _text_column([v if type(v) is str else text_value(v) for v in values])
        return numeric_column(values, col, locate)

    def scenario_code(self, scenario: Any) -> np.ndarray:
        index = scenario if type(scenario) is int and not isinstance(scenario, bool) else self.scenarios.index(scenario)
        return np.array([index], dtype=np.int64)


def _in_context(_i: int) -> tuple[str, int | None]:
    return ("context", None)


def _text_column(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _sequence_text(v: Any, sep: str, col: str, i: int, locate: Locate) -> str | None:
    """A sequence value (a list of items, or text already joined with the spec's separator) as joined text."""
    if v is None or type(v) is str:
        return v
    if type(v) is list:
        if not all(map(_is_item, v)):
            what, index = locate(i)
            raise FeatureError(what, index, col, "expected a list of text or numbers for sequence feature")
        return None if not v else sep.join(text_value(x) or "" for x in v)
    if type(v) in SCALAR_TYPES:
        return text_value(v)
    what, index = locate(i)
    raise FeatureError(what, index, col, f"expected a list or text, got {_kind(v)}, for sequence feature")


def _is_scalar(v: Any) -> bool:
    """A single feature value: text, a finite number, a boolean or null."""
    t = type(v)
    return t in SCALAR_TYPES and (t is not float or math.isfinite(v))


def _is_item(v: Any) -> bool:
    """An item of a sequence feature: text or a finite number."""
    t = type(v)
    return t is str or t is int or (t is float and math.isfinite(v))


def numeric_column(values: list[Any], col: str, locate: Locate) -> np.ndarray:
    """Numbers as a float array (None → NaN, numeric strings parsed). A boolean, a list, an object, a
    non-numeric or non-finite string is a :class:`FeatureError` naming where the value came from."""
    types = set(map(type, values))
    if types <= _NUMBER_TYPES:
        out = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        if float not in types or np.isfinite(out[~_none_mask(values, types)]).all():
            return out
    for i, v in enumerate(values):
        if v is None:
            continue
        if type(v) in (int, float) and math.isfinite(v):
            continue
        non_finite = type(v) is float
        if type(v) is str:
            try:
                if math.isfinite(float(v)):
                    continue
                non_finite = True
            except ValueError:
                pass
        what, index = locate(i)
        expected = "a finite number" if non_finite else "a number"
        raise FeatureError(what, index, col, f"expected {expected}, got {_show(v)} for feature")
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


_NUMBER_TYPES = frozenset({int, float, type(None)})


def _none_mask(values: list[Any], types: set[type]) -> np.ndarray:
    if type(None) not in types:
        return np.zeros(len(values), bool)
    return np.fromiter((v is None for v in values), bool, len(values))


def _raise_first(values: list[Any], col: str, locate: Locate, ok: Callable[[Any], bool], problem: str) -> None:
    for i, v in enumerate(values):
        if not ok(v):
            what, index = locate(i)
            raise FeatureError(what, index, col, f"{problem} {_kind(v)} for feature")


def _kind(v: Any) -> str:
    """A value's JSON kind, for error messages (never the whole value: it may be megabytes)."""
    if isinstance(v, list):
        return f"a list ({len(v)} items)"
    if isinstance(v, dict):
        return f"an object ({len(v)} keys)"
    return _show(v)


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | dict):
        return _kind(v)
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
