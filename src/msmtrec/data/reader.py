"""Read the rows a spec points at into one pandas DataFrame.

Only the columns the spec uses are read. Two bookkeeping columns travel with the rows so every later
error can name where a bad value came from: ``__file`` (index into :attr:`RawData.files`) and ``__line``
(1-based line in the file, counting the header).
"""

from __future__ import annotations

import glob
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from msmtrec.data.expressions import referenced_columns
from msmtrec.data.files import (
    CsvLayout,
    check_fields,
    csv_blocks,
    decode_check,
    drop_records,
    file_format,
    read_bytes,
    scan_csv,
)
from msmtrec.data.spec import DatasetSpec, data_root
from msmtrec.errors import DataError, SpecError

FILE_COL = "__file"
LINE_COL = "__line"
SCENARIO_COL = "__scenario"
SPLIT_COL = "__split"


@dataclass
class RawData:
    frame: pd.DataFrame
    files: list[str]
    dropped: dict[str, int] = field(default_factory=dict)
    """Rows removed on purpose, by reason (e.g. the spec's filter), for the report."""

    def where(self, row_index: int) -> str:
        """``file:line`` of a row, for error messages."""
        r = self.frame.loc[row_index]
        return f"{self.files[int(r[FILE_COL])]}:{int(r[LINE_COL])}"


def string_columns(spec: DatasetSpec) -> list[str]:
    """Columns read as text: categorical, sequence, id and scenario columns."""
    cols = [f.name for f in spec.features.sparse] + [f.name for f in spec.features.sequence]
    cols += [c for c in (spec.features.user_id, spec.features.item_id, spec.scenario.column) if c]
    return cols


def needed_columns(spec: DatasetSpec, with_labels: bool = True) -> list[str]:
    cols = string_columns(spec) + [f.name for f in spec.features.dense]
    if with_labels:
        for t in spec.tasks:
            cols += referenced_columns(t.label)
        if spec.filter:
            cols += referenced_columns(spec.filter)
        if spec.split.time_column:
            cols.append(spec.split.time_column)
    return list(dict.fromkeys(cols))


def expand(paths: str | list[str], root: Path, what: str) -> list[str]:
    """Expand globs relative to the data root; no match is an error naming the pattern."""
    out: list[str] = []
    for p in [paths] if isinstance(paths, str) else paths:
        full = p if Path(p).is_absolute() else str(root / p)
        matches = sorted(glob.glob(full)) if any(ch in full for ch in "*?[") else [full]
        if not matches or not Path(matches[0]).exists():
            raise DataError(f"{what}: no file matches {full!r} (data root {root}; set --data-root or $MSMTREC_DATA)")
        out.extend(matches)
    return out


def _column_names(spec: DatasetSpec, root: Path) -> list[str] | None:
    if spec.files.columns:
        return list(spec.files.columns)
    if spec.files.columns_file:
        p = Path(spec.files.columns_file)
        p = p if p.is_absolute() else root / p
        if not p.exists():
            raise SpecError(f"{spec.origin}: files.columns_file {p} does not exist")
        return [line.strip() for line in p.read_text().splitlines() if line.strip()]
    if not spec.files.header:
        raise SpecError(f"{spec.origin}: files.header is false but neither files.columns nor columns_file is given")
    return None


BAD_ROWS = "files.bad_rows: skip, wrong field count"
"""Key of :attr:`RawData.dropped` counting rows skipped for a wrong field count."""


def read_file(
    path: str, spec: DatasetSpec, columns: list[str], root: Path, dropped: dict[str, int] | None = None
) -> pd.DataFrame:
    """One file → DataFrame of ``columns`` (text columns kept as strings), with a line-number column.

    Rows skipped under ``files.bad_rows: skip`` are added to ``dropped[BAD_ROWS]``.
    """
    fmt = spec.files.format
    if fmt == "auto":
        fmt = file_format(path)
    text_cols = set(string_columns(spec))
    if fmt == "parquet":
        frame = _read_parquet(path, columns)
    else:
        frame = _read_csv(path, spec, columns, root, text_cols, dropped if dropped is not None else {})
    if frame.empty:
        raise DataError(f"{path}: the file has no rows")
    for c in text_cols & set(frame.columns):
        if frame[c].dtype != object and not isinstance(frame[c].dtype, pd.StringDtype):
            frame[c] = to_text(frame[c])
    return frame


def _read_parquet(path: str, columns: list[str]) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        schema_names = pq.read_schema(path).names if not Path(path).is_dir() else None
    except Exception as e:  # pyarrow raises several types for a bad file
        raise DataError(f"{path}: cannot read as Parquet: {e}") from None
    if schema_names is not None:
        missing = [c for c in columns if c not in schema_names]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; the file has {schema_names}")
    try:
        frame = pd.read_parquet(path, columns=columns)
    except Exception as e:  # a folder without Parquet files, a damaged part, a missing column in one part
        raise DataError(f"{path}: cannot read as Parquet ({type(e).__name__}: {e}); expected Parquet file(s)") from None
    frame[LINE_COL] = np.arange(len(frame), dtype=np.int64) + 1
    return frame


def _read_csv(
    path: str, spec: DatasetSpec, columns: list[str], root: Path, text_cols: set[str], dropped: dict[str, int]
) -> pd.DataFrame:
    """Check the structure (field counts, encoding, compression), then let pandas parse the checked bytes."""
    names = _column_names(spec, root)
    sep, skip_space = _separator(spec.files.sep)
    data = decode_check(path, read_bytes(path), spec.files.encoding)
    layout = scan_csv(path, data, sep, skip_space)
    if layout.fields.size == 0:
        raise DataError(f"{path}: the file is empty (expected {'a header and ' if names is None else ''}rows)")
    start = 1 if names is None else 0
    expected = int(layout.fields[0]) if names is None else len(names)
    bad = check_fields(path, layout, expected, start, skip=spec.files.bad_rows == "skip")
    if bad.size:
        dropped[BAD_ROWS] = dropped.get(BAD_ROWS, 0) + int(bad.size)
        data = drop_records(data, layout, bad)
    lines = np.delete(layout.first_line[start:], bad - start)
    header = 0 if names is None else None
    try:
        head = pd.read_csv(io.BytesIO(data), sep=sep, names=names, header=header, nrows=0)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty (expected a header and rows)") from None
    missing = [c for c in columns if c not in head.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {list(head.columns)}")
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            sep=sep,
            names=names,
            header=header,
            usecols=columns,
            dtype={c: str for c in columns if c in text_cols},
            na_values=spec.files.na_values,
            keep_default_na=False,
            skipinitialspace=skip_space,
            low_memory=False,
            encoding="utf-8",
        )
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: malformed CSV ({str(e).strip()}); expected balanced double quotes") from None
    # One line number per record, as the scan found them; a disagreement with pandas would be a bug here.
    frame[LINE_COL] = lines if len(lines) == len(frame) else np.arange(len(frame), dtype=np.int64) + 1 + start
    return frame


def iter_csv_chunks(
    path: str | Path,
    spec: DatasetSpec,
    pick: Callable[[list[str]], list[str]],
    text_cols: set[str],
    chunk_rows: int,
    sep: str | None = None,
    block_bytes: int = 1 << 23,
) -> Iterator[pd.DataFrame]:
    """A CSV file with a header in chunks of ``chunk_rows`` rows, memory bounded, with the checks of
    :func:`read_file`: field counts (``files.bad_rows``), encoding, compression, exact line numbers.

    ``pick(header)`` returns the columns to read. Each chunk has a ``__line`` column (physical line).
    """
    sep, skip_space = _separator(sep or spec.files.sep)
    header: list[str] | None = None
    columns: list[str] = []
    expected, pending = 0, []
    for block, first_line, byte_base in csv_blocks(path, block_bytes):
        data = decode_check(path, block, spec.files.encoding, first_line - 1, byte_base)
        layout = scan_csv(path, data, sep, skip_space)
        drop = np.zeros(0, np.int64)
        if header is None:
            if layout.fields.size == 0:
                continue
            header = [str(c) for c in pd.read_csv(io.BytesIO(data), sep=sep, nrows=0, skipinitialspace=skip_space)]
            columns, expected, drop = pick(header), int(layout.fields[0]), np.array([0])
        start = len(drop)
        layout.first_line += first_line - 1
        bad = check_fields(path, layout, expected, start, skip=spec.files.bad_rows == "skip")
        drop = np.concatenate((drop, bad))
        lines = np.delete(layout.first_line, drop)
        if lines.size == 0:
            continue
        local = CsvLayout(layout.first_line - first_line + 1, layout.last_line, layout.fields)
        try:
            frame = pd.read_csv(
                io.BytesIO(drop_records(data, local, drop)), sep=sep, names=header, header=None, usecols=columns,
                dtype={c: str for c in columns if c in text_cols}, na_values=spec.files.na_values,
                keep_default_na=False, skipinitialspace=skip_space, low_memory=False, encoding="utf-8",
            )
        except pd.errors.ParserError as e:
            raise DataError(f"{path}: malformed CSV ({str(e).strip()}); expected balanced double quotes") from None
        frame[LINE_COL] = lines if len(lines) == len(frame) else np.arange(len(frame)) + lines[0]
        pending.append(frame)
        if sum(len(f) for f in pending) >= chunk_rows:
            rows = pd.concat(pending, ignore_index=True)
            full = len(rows) - len(rows) % chunk_rows
            for i in range(0, full, chunk_rows):
                yield rows.iloc[i : i + chunk_rows].reset_index(drop=True)
            pending = [rows.iloc[full:]] if full < len(rows) else []
    if header is None:
        raise DataError(f"{path}: the file is empty (expected a header and rows)")
    if pending:
        yield pd.concat(pending, ignore_index=True)


def _separator(sep: str) -> tuple[str, bool]:
    """The one-character separator pandas gets, and whether spaces after it are skipped (``sep: ", "``)."""
    skip_space = sep.strip() != sep and sep.strip() != ""
    return sep.strip() or sep, skip_space


def to_text(s: pd.Series) -> pd.Series:
    """Numbers as text without a spurious ``.0`` so 3 and 3.0 are the same category."""
    missing = s.isna()
    if pd.api.types.is_float_dtype(s):
        present = s[~missing]
        if (present == present.round()).all() and (present.abs() < 2**63).all():
            s = s.astype("Int64")
    # One vectorised conversion: per-row ``str()`` costs seconds per million ids.
    text = s.astype(str).astype(object)
    text[missing.to_numpy()] = None
    return text


def read_files(
    spec: DatasetSpec,
    paths: list[str],
    root: Path,
    with_labels: bool = True,
    split: str | None = None,
    dropped: dict[str, int] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    cols = needed_columns(spec, with_labels)
    if spec.scenario.column and spec.scenario.column not in cols:
        cols.append(spec.scenario.column)
    frames = []
    pattern = re.compile(spec.files.scenario_pattern) if spec.files.scenario_pattern else None
    for i, p in enumerate(paths):
        f = read_file(p, spec, cols, root, dropped)
        f[FILE_COL] = i
        if split is not None:
            f[SPLIT_COL] = split
        if spec.scenario.column is None:
            m = pattern.search(p) if pattern else None
            if m:
                f[SCENARIO_COL] = m.group("scenario")
            elif spec.scenario.default is not None:
                f[SCENARIO_COL] = spec.scenario.default
            else:
                raise DataError(
                    f"{p}: cannot tell the scenario: no scenario column, the file name does not match "
                    f"files.scenario_pattern {spec.files.scenario_pattern!r}, and scenario.default is not set"
                )
        else:
            f[SCENARIO_COL] = f[spec.scenario.column]
        frames.append(f)
    return pd.concat(frames, ignore_index=True), paths


def read_dataset(spec: DatasetSpec, root: str | Path | None = None) -> RawData:
    """All rows of a dataset, with a ``__split`` column when the spec gives split files."""
    root = data_root(root)
    dropped: dict[str, int] = {}
    if spec.split.method == "files":
        frames, files = [], []
        for split in ("train", "valid", "test"):
            paths = getattr(spec.split, split)
            if not paths:
                continue
            expanded = expand(paths, root, f"{spec.origin}: split.{split}")
            f, _ = read_files(spec, expanded, root, split=split, dropped=dropped)
            f[FILE_COL] += len(files)
            files += expanded
            frames.append(f)
        frame = pd.concat(frames, ignore_index=True)
    else:
        files = expand(spec.files.path, root, f"{spec.origin}: files.path")
        frame, files = read_files(spec, files, root, dropped=dropped)
    raw = RawData(frame=frame, files=files, dropped=dropped)
    missing_scen = frame[SCENARIO_COL].isna()
    if missing_scen.any():
        i = int(np.flatnonzero(missing_scen.to_numpy())[0])
        raise DataError(
            f"{raw.where(i)}: scenario column {spec.scenario.column!r} is empty "
            f"({int(missing_scen.sum())} rows); every row needs a scenario"
        )
    frame[SCENARIO_COL] = frame[SCENARIO_COL].astype(str)
    return raw
