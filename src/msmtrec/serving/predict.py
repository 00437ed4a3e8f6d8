"""Batch prediction: raw CSV or Parquet rows in, one column per task out, streamed chunk by chunk.

Files are read in chunks (``pandas.read_csv(chunksize=...)`` or ``pyarrow`` ``iter_batches``) and every
chunk is written before the next is read, so memory stays bounded by the chunk size whatever the file
size. Text columns are read as strings and missing markers follow the spec, exactly like the training
reader, so a category is encoded the same way in both places. The output is written to a temporary
file beside the target and renamed at the end: a failed run never leaves a half-written result.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pandas as pd

from msmtrec.data.files import file_format as _detect
from msmtrec.data.preprocessor import TransformReport
from msmtrec.data.reader import LINE_COL, iter_csv_chunks, string_columns, to_text
from msmtrec.errors import DataError, MsmtrecError
from msmtrec.serving.scorer import Scorer

DEFAULT_CHUNK = 50_000


@dataclass
class PredictReport:
    """What a prediction run did: rows, time, OOV / imputed counts per column, chunks."""

    rows: int = 0
    seconds: float = 0.0
    chunks: int = 0
    transform: TransformReport = field(default_factory=TransformReport)
    output: str = ""

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """The text ``msmtrec predict`` prints."""
        from msmtrec.report import format_table

        lines = [
            f"wrote {self.rows:,} rows in {self.chunks} chunk(s) to {self.output} "
            f"in {self.seconds:.2f} s ({self.rows_per_second:,.0f} rows/s)"
        ]
        rows = [[c, n, self.transform.imputed.get(c, 0)] for c, n in self.transform.oov.items()]
        rows += [[c, 0, n] for c, n in self.transform.imputed.items() if c not in self.transform.oov]
        if rows:
            lines += ["", format_table(["column", "out-of-vocabulary", "imputed"], rows)]
        return "\n".join(lines)


def file_format(path: str | Path) -> str:
    """``csv`` or ``parquet`` from the file name (the data layer's one detector; unknown names refused)."""
    return _detect(path, strict=True)


LABEL_SUFFIX = "_label"
"""A kept input column named like a task (its label, usually) is written as ``{task}_label``."""


def kept_name(column: str, tasks: list[str] | tuple[str, ...]) -> str:
    """The output name of a kept input column: itself, or ``{column}_label`` when a prediction has its name."""
    return f"{column}{LABEL_SUFFIX}" if column in tasks else column


def _columns_wanted(scorer: Scorer, available: list[str], keep: list[str]) -> tuple[list[str], list[str]]:
    """(columns to read, id columns to copy to the output), checking the input has what the model needs."""
    spec = scorer.pre.spec
    need = list(scorer.required)
    scen = spec.scenario.column
    if scen and scen not in available and "scenario" not in available and spec.scenario.default is None:
        raise DataError(f"input has no scenario column {scen!r}")
    if scen and scen in available:
        need.append(scen)
    elif "scenario" in available:
        need.append("scenario")
    missing = [c for c in scorer.required if c not in available]
    if missing:
        raise DataError(f"input is missing feature column(s) {missing}; it has {available}")
    ids = [c for c in (spec.features.user_id, spec.features.item_id) if c and c in available]
    unknown = [c for c in keep if c not in available]
    if unknown:
        raise DataError(f"--keep column(s) {unknown} are not in the input; it has {available}")
    ids += [c for c in keep if c not in ids]
    names = [kept_name(c, scorer.task_names) for c in ids]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise DataError(f"--keep: output column(s) {clash} would be written twice; rename them in the input")
    return list(dict.fromkeys(need + ids)), ids


def read_chunks(
    scorer: Scorer, path: Path, chunk_rows: int, keep: list[str]
) -> Iterator[tuple[pd.DataFrame, list[str]]]:
    """Yield ``(chunk, id_columns)``; reads only the needed columns, text columns as strings."""
    spec = scorer.pre.spec
    text = set(string_columns(spec)) | {"scenario"} | set(keep)
    if file_format(path) == "parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises several types for a bad file
            raise DataError(f"{path}: cannot read as Parquet: {e}") from None
        cols, ids = _columns_wanted(scorer, pf.schema_arrow.names, keep)
        for rb in pf.iter_batches(batch_size=chunk_rows, columns=cols):
            frame = rb.to_pandas()
            for c in text & set(frame.columns):
                if frame[c].dtype != object:
                    frame[c] = to_text(frame[c])
            yield frame, ids
        return
    sep = "\t" if str(path).lower().endswith(".tsv") else None
    wanted: list[list[str]] = []

    def pick(header: list[str]) -> list[str]:
        cols, ids = _columns_wanted(scorer, header, keep)
        wanted.append(ids)
        return cols

    # the same checks as training's reader (field counts, encoding, compression, exact lines), block by block
    for frame in iter_csv_chunks(path, spec, pick, text, chunk_rows, sep=sep):
        yield frame, wanted[0]


class _Writer:
    """Appends chunks to a CSV or Parquet file (Parquet schema fixed by the first chunk)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fmt = file_format(path)
        self.pq_writer = None
        self.handle: IO[str] | None = None
        self.first = True

    def write(self, frame: pd.DataFrame) -> None:
        if self.fmt == "csv":
            if self.handle is None:
                gz = self.path.name.lower().endswith(".gz")
                self.handle = gzip.open(self.path, "wt", newline="") if gz else open(self.path, "w", newline="")
            frame.to_csv(self.handle, header=self.first, index=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self.pq_writer is None:
                self.pq_writer = pq.ParquetWriter(self.path, table.schema)
            self.pq_writer.write_table(table.cast(self.pq_writer.schema))
        self.first = False

    def close(self) -> None:
        if self.pq_writer is not None:
            self.pq_writer.close()
            self.pq_writer = None
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def predict_file(
    run_dir: str | Path | Scorer,
    input_path: str | Path,
    output_path: str | Path,
    chunk_rows: int = DEFAULT_CHUNK,
    keep: list[str] | None = None,
) -> PredictReport:
    """Score ``input_path`` chunk by chunk and write predictions (plus id columns) to ``output_path``."""
    if chunk_rows < 1:
        raise MsmtrecError(f"--chunk-rows must be >= 1, got {chunk_rows}")
    scorer = run_dir if isinstance(run_dir, Scorer) else Scorer.load(run_dir)
    src, dst = Path(input_path), Path(output_path)
    if not src.exists():
        raise MsmtrecError(f"{src}: no such input file")
    if file_format(dst) == "csv" and str(dst).lower().endswith((".bz2", ".zst", ".tsv", ".txt")):
        raise MsmtrecError(f"{dst}: write .csv, .csv.gz or .parquet")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.partial{''.join(dst.suffixes)}")
    report = PredictReport(output=str(dst))
    writer = _Writer(tmp)
    start = time.perf_counter()
    try:
        for frame, ids in read_chunks(scorer, src, chunk_rows, keep or []):
            offset = report.rows
            frame = frame.reset_index(drop=True)
            lines = frame.pop(LINE_COL).to_numpy() if LINE_COL in frame.columns else None

            def where(i: object, offset: int = offset, lines: object = lines) -> str:
                # the physical line for CSV (blank lines and quoted newlines counted); 0-based row for Parquet
                return f"{src}:{lines[int(i)]}" if lines is not None else f"{src} row {int(i) + offset}"

            scored = scorer.score_frame(frame, where=where)
            out = frame[ids].copy() if ids else pd.DataFrame(index=frame.index)
            out.columns = [kept_name(c, scorer.task_names) for c in out.columns]
            for t in scorer.task_names:
                out[t] = scored.predictions[t]
            writer.write(out)
            report.transform.merge(scored.report)
            report.rows += len(frame)
            report.chunks += 1
        writer.close()
        if report.chunks == 0:
            raise DataError(f"{src}: the file has no rows")
        os.replace(tmp, dst)
    finally:
        writer.close()
        if tmp.exists():
            tmp.unlink()
    report.seconds = time.perf_counter() - start
    return report
