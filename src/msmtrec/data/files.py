"""Raw data files: what kind a file is, its bytes (decompressed and decoded), and its CSV structure.

One place answers "is this Parquet or CSV, and how is it compressed" for every reader (training, batch
prediction, evaluation of a raw file). CSV files are checked here before pandas parses them, because
pandas accepts broken structure silently: a row with one field too many shifts its values into other
columns, a row one field short becomes "missing" values, and blank lines or quoted newlines make a
row's position differ from its line number. :func:`scan_csv` finds every record's physical line and
field count in one vectorised pass over the bytes (a ``csv`` module pass when quoting is irregular), so
an error names the exact line, and a spec may opt in to skipping malformed rows (``files.bad_rows``).
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import lzma
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msmtrec.errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_CHUNK = 1 << 22
_WHITESPACE = b" \t\r"


# ---------------------------------------------------------------------------------------- file types


_NAMED_ONLY = (".zst", ".zip")
"""Compressions recognised by name but not decompressed: a clear error instead of parsing compressed bytes."""


def compression(path: str | Path) -> str | None:
    """``.gz`` / ``.bz2`` / ``.xz`` / ``.zst`` / ``.zip`` from the file name, else ``None``."""
    suffix = Path(str(path).lower()).suffix
    return suffix if suffix in _OPENERS or suffix in _NAMED_ONLY else None


def file_format(path: str | Path, strict: bool = False) -> str:
    """``parquet`` or ``csv`` from the name (a folder is a Parquet dataset); the one file type detector.

    ``strict`` refuses names that are neither (``data.json``), for commands that also write files.
    """
    name = str(path).lower()
    base = name[: -len(compression(name) or "")] if compression(name) else name
    if base.endswith(PARQUET_SUFFIXES) or (Path(path).is_dir() and not strict):
        return "parquet"
    if base.endswith(CSV_SUFFIXES) or not strict:
        return "csv"
    raise DataError(f"{path}: unknown file type; use .csv (optionally .gz, .bz2 or .xz) or .parquet")


def is_data_file(path: str | Path) -> bool:
    """A file whose name says CSV or Parquet (possibly compressed)."""
    try:
        return Path(path).is_file() and bool(file_format(path, strict=True))
    except DataError:
        return False


# --------------------------------------------------------------------------------------------- bytes


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, decompressed by its suffix; every failure is a one-line :class:`DataError`."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a CSV file (a folder is read only as a Parquet dataset)")
    if compression(path) in _NAMED_ONLY:
        raise DataError(f"{path}: {compression(path)} files are not read here; decompress it or use .gz, .bz2 or .xz")
    opener = _OPENERS.get(compression(path) or "")
    try:
        if opener is None:
            return path.read_bytes()
        return _decompress(path, opener)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None


def _decompress(path: Path, opener) -> bytes:  # noqa: ANN001 - gzip.open / bz2.open / lzma.open
    return b"".join(_read_blocks(path, opener, _CHUNK))


def _read_blocks(path: Path, opener, size: int) -> Iterator[bytes]:  # noqa: ANN001 - open / gzip.open / ...
    """The file's (decompressed) bytes in blocks of ``size``; a damaged stream is a one-line error."""
    kind = (compression(path) or ".")[1:]
    done, lines = 0, 0
    try:
        with opener(path, "rb") as f:
            while chunk := f.read(size):
                done += len(chunk)
                lines += chunk.count(b"\n")
                yield chunk
    except EOFError:
        raise DataError(
            f"{path}: truncated {kind} file: the compressed stream ends after {done:,} decompressed bytes "
            f"(line {lines + 1}); expected a complete {kind} stream (re-download or re-compress it)"
        ) from None
    except (gzip.BadGzipFile, zlib.error, lzma.LZMAError) as e:
        raise DataError(
            f"{path}: not a valid {kind} file (after {done:,} decompressed bytes: {e}); expected {kind}-compressed "
            "text, or rename the file without the suffix"
        ) from None


def csv_blocks(path: str | Path, size: int = 1 << 23) -> Iterator[tuple[bytes, int, int]]:
    """``(block, first line, first byte offset)``: whole records only, about ``size`` bytes each.

    For reading files larger than memory with the same checks as :func:`read_bytes` + :func:`scan_csv`.
    A block ends at the last newline with an even number of double quotes before it (outside any
    quoted field); a block with none grows until one comes or the file ends.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a CSV file")
    if compression(path) in _NAMED_ONLY:
        raise DataError(f"{path}: {compression(path)} files are not read here; decompress it or use .gz, .bz2 or .xz")
    opener = _OPENERS.get(compression(path) or "", open)
    carry, line, offset = b"", 1, 0
    try:
        for chunk in _read_blocks(path, opener, size):
            data = carry + chunk
            cut = _record_boundary(data)
            if cut <= 0:
                carry = data
                continue
            yield data[:cut], line, offset
            line += data.count(b"\n", 0, cut)
            offset += cut
            carry = data[cut:]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    if carry:
        yield carry, line, offset


def _record_boundary(data: bytes) -> int:
    """Just past the last newline outside quotes (even quote count before it), or 0."""
    buf = np.frombuffer(data, np.uint8)
    newlines = np.flatnonzero(buf == 10)
    if newlines.size == 0:
        return 0
    quotes = np.flatnonzero(buf == 34)
    outside = newlines[np.searchsorted(quotes, newlines) % 2 == 0] if quotes.size else newlines
    return int(outside[-1]) + 1 if outside.size else 0


def decode_check(path: str | Path, data: bytes, encoding: str, line_base: int = 0, byte_base: int = 0) -> bytes:
    """UTF-8 bytes of the file's text, or a one-line error at the first byte ``encoding`` cannot decode.

    The structure scan and pandas then work on UTF-8 whatever the file's encoding; pure ASCII (most data)
    is returned as is without decoding.
    """
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"{path}: unknown files.encoding {encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
    if name in ("utf-8", "ascii") and data.isascii():
        return data
    try:
        text = data.decode(name)
    except UnicodeDecodeError as e:
        line = line_base + data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        bad = data[e.start : e.start + 1].hex()
        raise DataError(
            f"{path}:{line}: byte 0x{bad} at offset {byte_base + e.start:,} (column {col}) is not valid {encoding}; "
            "set files.encoding in the spec (e.g. latin-1, cp1252) or fix the file"
        ) from None
    return data if name == "utf-8" else text.encode("utf-8")


# ----------------------------------------------------------------------------------------- structure


@dataclass
class CsvLayout:
    """Where each record of a CSV file is and how many fields it has (blank lines excluded)."""

    first_line: np.ndarray
    """1-based physical line where each record starts (header included when the file has one)."""
    last_line: np.ndarray
    """1-based physical line where each record ends (differs from ``first_line`` after a quoted newline)."""
    fields: np.ndarray
    """Number of fields of each record."""
    skipped: list[str] = field(default_factory=list)
    """``line N: expected E fields, found F`` for each record dropped by :func:`drop_records`."""


def scan_csv(path: str | Path, data: bytes, sep: str, skip_space: bool = False) -> CsvLayout:
    """Every non-blank record's line span and field count (pandas' rules: double quotes, blank lines skipped).

    A line ends at ``\n``, or at a lone ``\r`` outside quotes (as pandas reads it). Well-formed files
    (quotes only around whole fields) are scanned with NumPy; anything else (a quote inside a field, an
    unbalanced quote, spaces before a quote) goes through the ``csv`` module.
    """
    if len(sep) != 1:
        raise DataError(f"{path}: files.sep must be one character (after stripping spaces), got {sep!r}")
    layout = _scan_vectorised(data, ord(sep))
    return layout if layout is not None else _scan_quoted(path, data, sep, skip_space)


def _scan_vectorised(data: bytes, sep: int) -> CsvLayout | None:
    """Records and field counts without a Python loop per row; ``None`` when quoting is not plain."""
    buf = np.frombuffer(data, np.uint8)
    newlines = np.flatnonzero(buf == 10)
    seps = np.flatnonzero(buf == sep)
    quotes = np.flatnonzero(buf == 34) if b'"' in data else newlines[:0]  # memchr first: most files have none
    lone_cr = np.flatnonzero(buf == 13) if b"\r" in data else newlines[:0]
    lone_cr = lone_cr[buf[np.minimum(lone_cr + 1, buf.size - 1)] != 10] if lone_cr.size else lone_cr
    if quotes.size:
        if not _plain_quoting(buf, quotes, sep):
            return None
        seps = _outside(seps, quotes[0::2], quotes[1::2])
        lone_cr = _outside(lone_cr, quotes[0::2], quotes[1::2])
    if lone_cr.size:  # old Mac line ends outside quotes break lines too
        newlines = np.sort(np.concatenate((newlines, lone_cr)))
    record_ends = _outside(newlines, quotes[0::2], quotes[1::2]) if quotes.size else newlines
    starts = np.concatenate(([0], record_ends + 1))
    ends = np.concatenate((record_ends, [buf.size]))
    if starts[-1] == buf.size:  # the file ends with a newline: no record after it
        starts, ends = starts[:-1], ends[:-1]
    fields = np.searchsorted(seps, ends) - np.searchsorted(seps, starts) + 1
    blank = _blank(data, starts, ends, fields, sep)
    keep = np.flatnonzero(~blank)
    first = np.searchsorted(newlines, starts[keep]) + 1
    last = np.searchsorted(newlines, ends[keep]) + 1
    return CsvLayout(first.astype(np.int64), last.astype(np.int64), fields[keep].astype(np.int64))


def _outside(positions: np.ndarray, opens: np.ndarray, closes: np.ndarray) -> np.ndarray:
    """``positions`` not inside any quoted span ``(opens[i], closes[i])``; cost grows with what is inside."""
    lo = np.searchsorted(positions, opens)
    lengths = np.searchsorted(positions, closes) - lo
    inner = lengths > 0
    if not inner.any():
        return positions
    lo, lengths = lo[inner], lengths[inner]
    index = np.repeat(lo - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
    keep = np.ones(positions.size, bool)
    keep[index] = False
    return positions[keep]


def _plain_quoting(buf: np.ndarray, quotes: np.ndarray, sep: int) -> bool:
    """Every quote opens a field, closes it, or doubles a quote inside it (the case NumPy can scan)."""
    if quotes.size % 2:
        return False
    opens, closes = quotes[0::2], quotes[1::2]
    doubled = np.zeros(opens.size, bool)
    doubled[1:] = opens[1:] == closes[:-1] + 1  # "" inside a quoted field
    before = np.where(opens > 0, buf[np.maximum(opens - 1, 0)], 10)
    after_idx = np.minimum(closes + 1, buf.size - 1)
    after = np.where(closes + 1 < buf.size, buf[after_idx], 10)
    closes_doubled = np.append(doubled[1:], False)
    ok_open = doubled | (before == sep) | (before == 10) | (before == 13)
    ok_close = closes_doubled | (after == sep) | (after == 10) | (after == 13)
    return bool(ok_open.all() and ok_close.all())


def _blank(data: bytes, starts: np.ndarray, ends: np.ndarray, fields: np.ndarray, sep: int) -> np.ndarray:
    """Records pandas skips: empty or whitespace-only lines (only lines without a separator can be)."""
    lengths = ends - starts
    blank = (fields == 1) & (lengths == 0)
    strip = bytes(c for c in _WHITESPACE if c != sep)
    maybe = np.flatnonzero((fields == 1) & (lengths > 0))
    if maybe.size:
        spans = zip(starts[maybe].tolist(), ends[maybe].tolist(), strict=True)
        blank[maybe] = [not data[a:b].strip(strip) for a, b in spans]
    return blank


def _scan_quoted(path: str | Path, data: bytes, sep: str, skip_space: bool) -> CsvLayout:
    """Irregular quoting: let the ``csv`` module (pandas' quoting rules) find records, one row at a time."""
    lines = (line + "\n" for line in data.decode("utf-8").split("\n"))  # lines end at \n only, as in the scan
    reader = csv.reader(lines, delimiter=sep, quotechar='"', strict=False, skipinitialspace=skip_space)
    first, last, counts = [], [], []
    previous = 0
    try:
        for row in reader:
            line = reader.line_num
            if row and not (len(row) == 1 and not row[0].strip(_WHITESPACE.decode())):
                first.append(previous + 1)
                last.append(line)
                counts.append(len(row))
            previous = line
    except csv.Error as e:
        raise DataError(f"{path}:{previous + 1}: malformed CSV ({e}); expected balanced double quotes") from None
    return CsvLayout(np.array(first, np.int64), np.array(last, np.int64), np.array(counts, np.int64))


def check_fields(path: str | Path, layout: CsvLayout, expected: int, start: int, skip: bool) -> np.ndarray:
    """Indices of records (from ``start``) whose field count is not ``expected``; an error unless ``skip``."""
    bad = np.flatnonzero(layout.fields[start:] != expected) + start
    if bad.size and not skip:
        i = int(bad[0])
        raise DataError(
            f"{path}:{int(layout.first_line[i])}: expected {expected} fields (as in the header), found "
            f"{int(layout.fields[i])} ({bad.size:,} such row(s)); fix the file or set files.bad_rows: skip"
        )
    return bad


def drop_records(data: bytes, layout: CsvLayout, bad: np.ndarray) -> bytes:
    """``data`` without the physical lines of records ``bad`` (for ``files.bad_rows: skip``)."""
    if bad.size == 0:
        return data
    buf = np.frombuffer(data, np.uint8)
    line_starts = np.concatenate(([0], np.flatnonzero(buf == 10) + 1, [len(data)]))
    pieces, pos = [], 0
    for i in bad:
        a = int(line_starts[layout.first_line[i] - 1])
        b = int(line_starts[min(int(layout.last_line[i]), len(line_starts) - 1)])
        pieces.append(data[pos:a])
        pos = b
    pieces.append(data[pos:])
    return b"".join(pieces)
