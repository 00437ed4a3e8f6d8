"""Streaming honours a spec's time split (by the files' time ranges) or refuses it; never a random split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from msmtrec.data.stream import stream_splits
from msmtrec.errors import DataError


def shard(path: Path, times: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = len(times)
    frame = pd.DataFrame({
        "c1": rng.choice(["a", "b", "c"], n), "x": rng.normal(size=n), "scen": rng.choice(["s0", "s1"], n),
        "click": (rng.random(n) < 0.3).astype(int), "t": times,
    })
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=100)


def spec(tmp_path: Path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(
        f"name: timed\nfiles: {{path: {tmp_path}/*.parquet, format: parquet}}\nscenario: {{column: scen}}\n"
        "tasks: [{name: click, label: click}]\nfeatures: {sparse: [c1], dense: [x]}\n"
        "split: {method: time, time_column: t, fractions: [0.6, 0.2, 0.2]}\n"
    )
    return path


def times_of(files: list[str]) -> np.ndarray:
    return np.concatenate([pq.read_table(f, columns=["t"]).column(0).to_numpy() for f in files])


def test_streamed_time_split_orders_files_by_time(tmp_path: Path) -> None:
    # file names in an order unrelated to time, so neither name order nor a random split is right by chance
    for k, name in enumerate(["q", "c", "z", "a", "m"]):
        shard(tmp_path / f"{name}.parquet", np.arange(k * 1000, k * 1000 + 300), seed=k)
    data = stream_splits(spec(tmp_path), fit_rows=500)
    t = {name: times_of(data.files[name]) for name in ("train", "valid", "test")}
    assert [len(v) for v in t.values()] == [900, 300, 300]
    assert t["train"].max() < t["valid"].min() and t["valid"].max() < t["test"].min()


def test_overlapping_time_ranges_are_refused(tmp_path: Path) -> None:
    for k in range(5):
        shard(tmp_path / f"p{k}.parquet", np.random.default_rng(k).integers(0, 10_000, 300), seed=k)
    with pytest.raises(DataError, match=r"split.method time with --stream: .*p\d\.parquet \(t \d+\.\.\d+\) overlaps"):
        stream_splits(spec(tmp_path), fit_rows=500)


def test_missing_time_column_is_named(tmp_path: Path) -> None:
    for k in range(3):
        shard(tmp_path / f"p{k}.parquet", np.arange(k * 10, k * 10 + 10), seed=k)
    text = spec(tmp_path).read_text().replace("time_column: t", "time_column: ts")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(DataError, match=r"p0\.parquet: no time column 'ts'"):
        stream_splits(tmp_path / "s.yaml", fit_rows=500)
