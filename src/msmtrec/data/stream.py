"""Training on Parquet data larger than memory: row groups streamed through the fitted preprocessor.

:class:`ParquetStream` has the iteration interface of :class:`~msmtrec.data.dataset.TensorDataset`
(``batches(batch_size, shuffle, seed, epoch, drop_last, start_batch)``, ``num_batches``, ``shard``,
``len``), so a trainer that takes ``splits: dict[str, TensorDataset]`` can be handed a stream as its
``train`` split. Nothing is held but a bounded window of rows:

* **Unit of work: a Parquet row group.** Row counts come from the file footers, so ``len`` and
  ``num_batches`` are known without reading data. A row group is read with pyarrow (only the columns the
  spec uses), the text columns (ids, categories, scenario) are cast to strings in Arrow — the same
  values the in-memory reader produces (3 and 3.0 both become ``"3"``) — and encoded by
  :meth:`Preprocessor.transform <msmtrec.data.preprocessor.Preprocessor.transform>`, so streaming and
  in-memory training see identical encodings.
* **Shuffling in two stages.** The order of row groups is permuted per epoch from ``(seed, epoch)``, and
  encoded rows pass through a shuffle buffer of ``shuffle_buffer`` rows: when the buffer is full it is
  permuted and everything above half of it is emitted, the rest staying to mix with the next row groups.
  Logs are usually written in time order, so without this a batch would hold one hour of one day.
  The permutations depend only on ``(seed, epoch)`` and the row counts, so an epoch is reproducible and
  ``start_batch`` resumes exactly (the skipped batches are read again, not trained on).
* **Bounded memory.** A background thread reads and encodes up to ``prefetch`` row groups ahead while
  the model trains; peak memory is about ``shuffle_buffer + (prefetch + 2) × row group`` encoded rows,
  whatever the number of rows on disk.
* **Distributed.** ``shard(rank, world_size)`` gives each worker a disjoint set of whole row groups
  (balanced by row count) and, by default, cuts every shard to the smallest shard's length so all ranks
  run the same number of steps (DDP needs every rank in every all-reduce). The cut falls on the tail of
  the shuffled stream, so different rows are left out each epoch.

For data too large to fit the encoders in memory, :func:`fit_preprocessor` fits them on a bounded random
sample of row groups, and takes the scenario list (and per-scenario counts) from a scan of the scenario
column alone, so a rare scenario is never missed. :func:`stream_splits` splits by whole files.
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from msmtrec.data.dataset import TensorDataset
from msmtrec.data.files import file_format
from msmtrec.data.preprocessor import Preprocessor, TransformReport, natural_key
from msmtrec.data.reader import SCENARIO_COL, expand, needed_columns, string_columns
from msmtrec.data.schema import Batch
from msmtrec.data.spec import DatasetSpec, data_root, load_spec
from msmtrec.errors import DataError

DEFAULT_SHUFFLE_BUFFER = 200_000


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group: the unit that is read, shuffled between and sharded."""

    file: str
    index: int
    rows: int


def row_groups(paths: Iterable[str | Path]) -> list[RowGroup]:
    """Every row group of ``paths`` with its row count, from the footers only."""
    out: list[RowGroup] = []
    for p in paths:
        p = str(p)
        if file_format(p, strict=True) != "parquet":
            raise DataError(f"{p}: streaming reads Parquet files only (convert CSV with pyarrow or `data prepare`)")
        try:
            meta = pq.ParquetFile(p).metadata
        except Exception as e:  # pyarrow raises several types for a bad file
            raise DataError(f"{p}: cannot read as Parquet: {e}") from None
        out.extend(RowGroup(p, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups))
    return out


def footer_checksum(paths: Iterable[str | Path]) -> str:
    """sha256 over the Parquet footers (schema, row counts, column statistics) — cheap at any data size.

    Stands in for :func:`~msmtrec.data.preprocessor.file_checksum` (which reads every byte) when the data
    is too large to hash in full; the footers change whenever the content does in practice.
    """
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            f.seek(-8, 2)
            length = int.from_bytes(f.read(4), "little")
            f.seek(-8 - length, 2)
            h.update(f.read(length))
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- reading


class _Reader:
    """Reads one row group as the DataFrame the preprocessor expects (text columns as strings)."""

    def __init__(self, spec: DatasetSpec, with_labels: bool, passthrough: dict[str, str]) -> None:
        if spec.filter:
            raise DataError(
                f"{spec.origin}: streaming does not apply filter {spec.filter!r} (row counts come from the "
                "Parquet footers); write the filtered rows out first"
            )
        self.spec = spec
        self.with_labels = with_labels
        self.passthrough = passthrough
        cols = needed_columns(spec, with_labels)
        if spec.scenario.column and spec.scenario.column not in cols:
            cols.append(spec.scenario.column)
        self.columns = list(dict.fromkeys(cols + list(passthrough.values())))
        self.text = set(string_columns(spec))
        self.pattern = re.compile(spec.files.scenario_pattern) if spec.files.scenario_pattern else None
        self._files: dict[str, pq.ParquetFile] = {}

    def scenario_of_file(self, path: str) -> str:
        m = self.pattern.search(path) if self.pattern else None
        if m:
            return m.group("scenario")
        if self.spec.scenario.default is not None:
            return self.spec.scenario.default
        raise DataError(
            f"{path}: cannot tell the scenario: no scenario column, the file name does not match "
            f"files.scenario_pattern {self.spec.files.scenario_pattern!r}, and scenario.default is not set"
        )

    def _file(self, path: str) -> pq.ParquetFile:
        f = self._files.get(path)
        if f is None:
            f = pq.ParquetFile(path)
            missing = [c for c in self.columns if c not in f.schema_arrow.names]
            if missing:
                raise DataError(f"{path}: missing column(s) {missing}; the file has {f.schema_arrow.names}")
            # keep only a few files open: a shard may span thousands
            if len(self._files) >= 8:
                self._files.pop(next(iter(self._files)))
            self._files[path] = f
        return f

    def read(self, rg: RowGroup) -> tuple[pd.DataFrame, dict[str, torch.Tensor]]:
        table = self._file(rg.file).read_row_group(rg.index, columns=self.columns)
        extra = {key: torch.from_numpy(table.column(col).to_numpy().copy()) for key, col in self.passthrough.items()}
        arrays = {}
        for name in table.column_names:
            col = table.column(name)
            if name in self.text and not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
                col = pc.cast(col, pa.string())
            arrays[name] = col
        frame = pa.table(arrays).to_pandas()
        if self.spec.scenario.column:
            scen = frame[self.spec.scenario.column]
            if scen.isna().any():
                col = self.spec.scenario.column
                raise DataError(f"{rg.file} row group {rg.index}: scenario column {col!r} is empty")
            frame[SCENARIO_COL] = scen
        else:
            frame[SCENARIO_COL] = self.scenario_of_file(rg.file)
        return frame, extra


def scan_scenarios(spec: DatasetSpec, pieces: list[RowGroup]) -> dict[str, int]:
    """Rows per scenario value over all ``pieces``, reading only the scenario column."""
    reader = _Reader(spec, with_labels=False, passthrough={})
    counts: dict[str, int] = {}
    col = spec.scenario.column
    if col is None:
        for rg in pieces:
            s = reader.scenario_of_file(rg.file)
            counts[s] = counts.get(s, 0) + rg.rows
        return counts
    opened: dict[str, pq.ParquetFile] = {}
    for rg in pieces:
        if rg.file not in opened:
            opened.clear()  # one open file at a time
            opened[rg.file] = pq.ParquetFile(rg.file)
        t = opened[rg.file].read_row_group(rg.index, columns=[col]).column(0)
        if not pa.types.is_string(t.type):
            t = pc.cast(t, pa.string())
        vc = pc.value_counts(t).to_pylist()
        for item in vc:
            if item["values"] is None:
                raise DataError(f"{rg.file} row group {rg.index}: scenario column {col!r} is empty")
            counts[item["values"]] = counts.get(item["values"], 0) + int(item["counts"])
    return counts


def fit_preprocessor(
    spec: str | Path | DatasetSpec,
    paths: list[str],
    max_rows: int = 500_000,
    seed: int = 0,
    overrides: dict | None = None,
    scenario_paths: list[str] | None = None,
) -> Preprocessor:
    """Fit encoders on at most ``max_rows`` rows of random whole row groups of ``paths``.

    Hash encoders need no fitting; vocabularies and normalisation statistics come from the sample (so a
    ``min_count`` applies to counts in the sample). The scenario list comes from a scan of the scenario
    column over *all* row groups of ``scenario_paths`` (default ``paths``; pass every split's files), so
    every scenario the streams can meet is known.
    """
    spec = load_spec(spec, overrides)
    pieces = row_groups(paths)
    if not pieces:
        raise DataError("fit_preprocessor: no row groups in the given files")
    order = np.random.default_rng(seed).permutation(len(pieces))
    reader = _Reader(spec, with_labels=True, passthrough={})
    frames, taken = [], 0
    for i in order:
        if taken >= max_rows:
            break
        frame, _ = reader.read(pieces[i])
        frame = frame.iloc[: max_rows - taken]
        frames.append(frame)
        taken += len(frame)
    sample = pd.concat(frames, ignore_index=True)
    pre = Preprocessor(spec).fit(sample)
    counts = scan_scenarios(spec, pieces if scenario_paths is None else row_groups(scenario_paths))

    pre.scenarios = sorted(counts, key=natural_key)
    pre.source_checksum = "footers:" + footer_checksum(sorted({p.file for p in pieces}))
    return pre


# ------------------------------------------------------------------------------------------------ stream


def _cat(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _take(batch: Batch, index: torch.Tensor) -> Batch:
    return {k: v.index_select(0, index) for k, v in batch.items()}


def _rows(batch: Batch) -> int:
    return int(next(iter(batch.values())).shape[0])


def _assign(pieces: list[RowGroup], world_size: int) -> list[list[RowGroup]]:
    """Longest-processing-time assignment of row groups to ranks (deterministic, balanced by rows)."""
    order = sorted(range(len(pieces)), key=lambda i: (-pieces[i].rows, i))
    loads = [0] * world_size
    out: list[list[int]] = [[] for _ in range(world_size)]
    for i in order:
        r = min(range(world_size), key=lambda j: (loads[j], j))
        out[r].append(i)
        loads[r] += pieces[i].rows
    return [[pieces[i] for i in sorted(idx)] for idx in out]


@dataclass
class ParquetStream:
    """A training split streamed from Parquet row groups; a drop-in for ``TensorDataset`` iteration."""

    pieces: list[RowGroup]
    preprocessor: Preprocessor
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    """Rows mixed across row groups when shuffling (0: shuffle within each row group only)."""
    prefetch: int = 2
    """Row groups read and encoded ahead in a background thread (0: read in the calling thread)."""
    passthrough: dict[str, str] = field(default_factory=dict)
    """Extra numeric columns to carry as batch keys, e.g. ``{"row_id": "impression_id"}``."""
    with_labels: bool = True
    max_rows: int | None = None
    """Stop each epoch after this many rows (set by ``shard`` to equalise ranks)."""
    report: TransformReport = field(default_factory=TransformReport)
    """OOV / imputed counts accumulated over everything encoded so far."""

    # ------------------------------------------------------------------------------------- sizes

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(p.file for p in self.pieces))

    @property
    def num_rows(self) -> int:
        total = sum(p.rows for p in self.pieces)
        return total if self.max_rows is None else min(total, self.max_rows)

    def __len__(self) -> int:
        return self.num_rows

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        full, rest = divmod(self.num_rows, batch_size)
        return full + (1 if rest and not drop_last else 0)

    def scenario_counts(self) -> torch.Tensor:
        """Rows per scenario index (``[num_scenarios]``), from a scan of the scenario column only.

        For losses that weight scenarios by frequency, where an in-memory split would count its
        ``tensors["scenario"]``.
        """
        counts = scan_scenarios(self.preprocessor.spec, self.pieces)
        out = torch.zeros(len(self.preprocessor.scenarios), dtype=torch.long)
        for i, s in enumerate(self.preprocessor.scenarios):
            out[i] = counts.get(s, 0)
        return out

    # ------------------------------------------------------------------------------- distribution

    def shard(self, rank: int, world_size: int, equalize: bool = True) -> ParquetStream:
        """This rank's disjoint share of whole row groups (balanced by rows).

        With ``equalize`` every shard stops after the smallest shard's row count, so all ranks run the
        same number of steps; which rows fall past the cut changes with the epoch's shuffle.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        if world_size > len(self.pieces):
            raise DataError(
                f"cannot shard {len(self.pieces)} row group(s) over {world_size} workers; "
                "write smaller row groups or more files"
            )
        shares = _assign(self.pieces, world_size)
        cap = min(sum(p.rows for p in s) for s in shares) if equalize else None
        if self.max_rows is not None:
            cap = min(cap, self.max_rows) if cap is not None else self.max_rows
        return self._with(pieces=shares[rank], max_rows=cap)

    def limit(self, rows: int) -> ParquetStream:
        """The same stream stopping after ``rows`` rows per epoch."""
        return self._with(max_rows=min(rows, self.num_rows))

    def _with(self, **changes: object) -> ParquetStream:
        kw = {
            "pieces": self.pieces,
            "preprocessor": self.preprocessor,
            "shuffle_buffer": self.shuffle_buffer,
            "prefetch": self.prefetch,
            "passthrough": dict(self.passthrough),
            "with_labels": self.with_labels,
            "max_rows": self.max_rows,
        }
        kw.update(changes)
        return ParquetStream(**kw)  # type: ignore[arg-type]

    # ---------------------------------------------------------------------------------- iteration

    def encode(self, rg: RowGroup, reader: _Reader | None = None) -> Batch:
        """One row group → a batch of tensors (every row of the group)."""
        reader = reader or self._reader()
        frame, extra = reader.read(rg)

        def where(i: object) -> str:
            return f"{rg.file} row group {rg.index} row {i}"

        batch, rep = self.preprocessor.transform(frame, with_labels=self.with_labels, where=where)
        self.report.merge(rep)
        batch.update(extra)
        return batch

    def _reader(self) -> _Reader:
        return _Reader(self.preprocessor.spec, self.with_labels, self.passthrough)

    def _encoded(self, pieces: list[RowGroup]) -> Iterator[Batch]:
        """Encoded row groups in order, produced ``prefetch`` ahead by a background thread."""
        reader = self._reader()
        if self.prefetch <= 0:
            for rg in pieces:
                yield self.encode(rg, reader)
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for rg in pieces:
                    if stop.is_set() or not put(self.encode(rg, reader)):
                        return
                put(done)
            except BaseException as e:  # handed to the consumer, which re-raises it
                put(e)

        worker = threading.Thread(target=produce, name="parquet-stream-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()

    def _shuffled(self, chunks: Iterator[Batch], g: torch.Generator) -> Iterator[Batch]:
        """Mix rows across row groups through a buffer of ``shuffle_buffer`` rows."""
        keep = self.shuffle_buffer // 2
        buf: list[Batch] = []
        held = 0
        try:
            for chunk in chunks:
                n = _rows(chunk)
                if self.shuffle_buffer <= 0:
                    yield _take(chunk, torch.randperm(n, generator=g))
                    continue
                buf.append(chunk)
                held += n
                if held >= self.shuffle_buffer:
                    block = _cat(buf)
                    perm = torch.randperm(held, generator=g)
                    yield _take(block, perm[: held - keep])
                    buf, held = [_take(block, perm[held - keep :])], keep
            if held:
                block = _cat(buf)
                yield _take(block, torch.randperm(held, generator=g))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        start_batch: int = 0,
    ) -> Iterator[Batch]:
        """Yield batches of ``batch_size`` rows; with ``shuffle`` the order depends only on ``(seed, epoch)``.

        Every row appears exactly once per epoch (up to ``max_rows``); the last batch is short unless
        ``drop_last``. ``start_batch`` skips the first batches of the epoch (resuming a run).
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        n_batches = self.num_batches(batch_size, drop_last)
        if start_batch >= n_batches:
            return
        pieces = list(self.pieces)
        skip_rows = start_batch * batch_size
        if shuffle:
            g = torch.Generator().manual_seed(seed * 100_003 + epoch)
            order = torch.randperm(len(pieces), generator=g).tolist()
            pieces = [pieces[i] for i in order]
            rows: Iterator[Batch] = self._shuffled(self._encoded(pieces), g)
        else:
            # in file order a resumed epoch need not read the row groups it skips
            while pieces and pieces[0].rows <= skip_rows:
                skip_rows -= pieces[0].rows
                pieces.pop(0)
            rows = self._encoded(pieces)
        limit = self.num_rows - start_batch * batch_size
        yield from _rebatch(rows, batch_size, skip_rows, limit, drop_last)


def _rebatch(chunks: Iterator[Batch], batch_size: int, skip: int, limit: int, drop_last: bool) -> Iterator[Batch]:
    """Cut a stream of variable-size chunks into batches of ``batch_size`` after dropping ``skip`` rows.

    ``limit`` bounds the rows yielded (after the skip). The chunk iterator is closed on exit so its
    prefetch thread stops.
    """
    carry: list[Batch] = []
    held = 0
    try:
        for chunk in chunks:
            n = _rows(chunk)
            if skip:
                if n <= skip:
                    skip -= n
                    continue
                chunk = {k: v[skip:] for k, v in chunk.items()}
                n -= skip
                skip = 0
            carry.append(chunk)
            held += n
            if held < batch_size and held < limit:
                continue
            block = _cat(carry)
            lo = 0
            while held - lo >= batch_size and limit >= batch_size:
                yield {k: v[lo : lo + batch_size] for k, v in block.items()}
                lo += batch_size
                limit -= batch_size
            if limit < batch_size and held - lo >= limit:  # the (short) last batch
                if limit > 0 and not drop_last:
                    yield {k: v[lo : lo + limit] for k, v in block.items()}
                return
            carry = [{k: v[lo:] for k, v in block.items()}] if held > lo else []
            held -= lo
        if held and limit > 0 and not drop_last:
            yield _cat(carry)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


# ------------------------------------------------------------------------------------------------ splits


def split_files(
    files: list[str], fractions: tuple[float, float, float] | list[float], seed: int
) -> dict[str, list[str]]:
    """Assign whole files to train / valid / test in the given proportions (seeded, at least one each).

    Splitting by file keeps every split streamable (rows of one file are never scattered over splits).
    Splits with a zero fraction get no files.
    """
    names = ("train", "valid", "test")
    wanted = [n for n, f in zip(names, fractions, strict=True) if f > 0]
    if len(files) < len(wanted):
        raise DataError(
            f"cannot split {len(files)} file(s) into {wanted} by file; write more shards "
            "(e.g. `msmtrec data synth --rows-per-file ...`) or give split.train/valid/test file lists"
        )
    order = [files[i] for i in np.random.default_rng(seed).permutation(len(files))]
    n = len(files)
    counts = {nm: (max(1, round(f * n)) if f > 0 else 0) for nm, f in zip(names, fractions, strict=True)}
    while sum(counts.values()) > n:  # rounding up the small splits overshot: shrink the largest
        big = max(counts, key=lambda k: counts[k])
        counts[big] -= 1
    counts["train"] += n - sum(counts.values())
    out, i = {}, 0
    for nm in names:
        out[nm] = sorted(order[i : i + counts[nm]])
        i += counts[nm]
    return out


def time_range(path: str, column: str) -> tuple[object, object, int]:
    """``(min, max, rows)`` of ``column`` over a Parquet file, from its footer statistics (no data read)."""
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(j).name for j in range(meta.num_columns)]
    if column not in names:
        raise DataError(f"{path}: no time column {column!r} (split.time_column); the file has {names}")
    j = names.index(column)
    lows, highs = [], []
    for i in range(meta.num_row_groups):
        st = meta.row_group(i).column(j).statistics
        if meta.row_group(i).num_rows == 0:
            continue
        if st is None or not st.has_min_max:
            raise DataError(
                f"{path} row group {i}: no min/max statistics for time column {column!r}; a streamed time split "
                "orders files by them: rewrite the file with statistics, or train without --stream"
            )
        lows.append(st.min)
        highs.append(st.max)
    if not lows:
        raise DataError(f"{path}: no rows")
    return min(lows), max(highs), meta.num_rows


def split_files_by_time(
    files: list[str], column: str, fractions: tuple[float, float, float] | list[float]
) -> dict[str, list[str]]:
    """A time split by whole files: earliest files train, then valid, then test (shares by row count).

    Streaming cannot scatter one file's rows over splits, so each split boundary must fall between
    files: every time in an earlier split must be <= every time in a later one. Files whose ranges
    overlap across a boundary are refused (a random split would leak future rows into training).
    """
    names = ("train", "valid", "test")
    wanted = [n for n, f in zip(names, fractions, strict=True) if f > 0]
    if len(files) < len(wanted):
        raise DataError(
            f"split.method time with --stream: cannot split {len(files)} file(s) into {wanted} by file; write one "
            "Parquet shard per time period (e.g. per day), or train without --stream"
        )
    ranges = sorted(((*time_range(f, column), f) for f in files), key=lambda r: (r[0], r[1], r[3]))
    rows = np.cumsum([r[2] for r in ranges])
    out: dict[str, list[str]] = {n: [] for n in names}
    start, cum = 0, 0.0
    for k, (name, frac) in enumerate(zip(names, fractions, strict=True)):
        if frac <= 0:
            continue
        cum += frac
        later = sum(1 for n, f in zip(names[k + 1 :], fractions[k + 1 :], strict=True) if f > 0)
        end = int(np.searchsorted(rows, cum * rows[-1] - 1e-9)) + 1 if later else len(ranges)
        end = min(max(end, start + 1), len(ranges) - later)
        out[name] = [r[3] for r in ranges[start:end]]
        if start > 0:
            _check_boundary(ranges[:start], ranges[start:end], column)
        start = end
    return out


def _check_boundary(before: list[tuple], after: list[tuple], column: str) -> None:
    last = max(before, key=lambda r: r[1])
    first = min(after, key=lambda r: r[0])
    if last[1] > first[0]:
        raise DataError(
            f"split.method time with --stream: {last[3]} ({column} {last[0]}..{last[1]}) overlaps {first[3]} "
            f"({first[0]}..{first[1]}) across a split boundary; streaming splits by whole files, so write shards "
            "that each cover a separate time period, or train without --stream"
        )


@dataclass
class StreamData:
    """Streamed splits and the preprocessor fitted for them."""

    preprocessor: Preprocessor
    splits: dict[str, ParquetStream]
    files: dict[str, list[str]]

    def materialize(self, split: str, max_rows: int | None = None) -> TensorDataset:
        """Load a (small) split into memory as a ``TensorDataset``, e.g. for evaluation."""
        return materialize(self.splits[split], max_rows)


def materialize(stream: ParquetStream, max_rows: int | None = None) -> TensorDataset:
    """All rows of ``stream`` (or the first ``max_rows``) in file order as one ``TensorDataset``."""
    s = stream if max_rows is None else stream.limit(max_rows)
    parts = list(s.batches(max(1, min(s.num_rows, 1 << 20)), shuffle=False))
    if not parts:
        raise DataError("materialize: the stream has no rows")
    return TensorDataset(_cat(parts))


def stream_splits(
    spec: str | Path | DatasetSpec,
    data_root_dir: str | Path | None = None,
    overrides: dict | None = None,
    preprocessor: Preprocessor | None = None,
    fit_rows: int = 500_000,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    prefetch: int = 2,
) -> StreamData:
    """Train / valid / test streams for a spec, splitting by whole files.

    ``split.method: files`` uses the spec's file lists (without ``valid``, ``valid_fraction`` of the
    training files is held out); ``time`` orders the files by the time ranges in their Parquet footers
    (:func:`split_files_by_time`, refused when ranges overlap across splits); otherwise the files
    matched by ``files.path`` are assigned to splits in ``split.fractions`` with ``split.seed``. The
    preprocessor is fitted on the training files
    (:func:`fit_preprocessor`) unless one is given.
    """
    spec = load_spec(spec, overrides)
    root = data_root(data_root_dir)
    s = spec.split
    if s.method == "files":
        files = {
            name: expand(getattr(s, name), root, f"{spec.origin}: split.{name}") if getattr(s, name) else []
            for name in ("train", "valid", "test")
        }
        if not files["valid"]:
            part = split_files(files["train"], (1 - s.valid_fraction, s.valid_fraction, 0.0), s.seed)
            files["train"], files["valid"] = part["train"], part["valid"]
    elif s.method == "time":
        assert s.time_column is not None  # the spec loader checks it
        files = split_files_by_time(expand(spec.files.path, root, f"{spec.origin}: files.path"), s.time_column,
                                    s.fractions)
    else:
        files = split_files(expand(spec.files.path, root, f"{spec.origin}: files.path"), s.fractions, s.seed)
    every = [f for name in ("train", "valid", "test") for f in files[name]]
    pre = preprocessor or fit_preprocessor(spec, files["train"], max_rows=fit_rows, seed=s.seed, scenario_paths=every)
    splits = {
        name: ParquetStream(row_groups(paths), pre, shuffle_buffer=shuffle_buffer, prefetch=prefetch)
        for name, paths in files.items()
        if paths
    }
    return StreamData(pre, splits, files)
