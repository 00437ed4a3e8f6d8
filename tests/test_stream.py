"""ParquetStream: every row once per epoch, seeded shuffles, disjoint shards, exact resume, same encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from msmtrec.data.dataset import TensorDataset
from msmtrec.data.reader import read_files
from msmtrec.data.spec import load_spec
from msmtrec.data.stream import (
    ParquetStream,
    fit_preprocessor,
    materialize,
    row_groups,
    split_files,
    stream_splits,
)
from msmtrec.data.synth import SynthConfig, synthesize
from msmtrec.errors import DataError

ROWS = 20_000
ID = {"row_id": "impression_id"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("stream")
    cfg = SynthConfig(rows=ROWS, users=20_000, items=5_000, seed=3, row_group_rows=3000, rows_per_file=6000)
    return synthesize(cfg, out).files  # 4 files, 7 row groups (the last one 2,000 rows)


@pytest.fixture(scope="module")
def pre(files: list[str]):  # noqa: ANN201 - Preprocessor
    return fit_preprocessor("synthetic", files, max_rows=8000)


def _stream(files: list[str], pre, **kw: object) -> ParquetStream:  # noqa: ANN001
    kw.setdefault("shuffle_buffer", 5000)
    return ParquetStream(row_groups(files), pre, passthrough=ID, **kw)  # type: ignore[arg-type]


def _ids(stream: ParquetStream, batch_size: int = 1000, **kw: object) -> np.ndarray:
    return torch.cat([b["row_id"] for b in stream.batches(batch_size, **kw)]).numpy()  # type: ignore[arg-type]


def test_sizes_from_metadata(files: list[str], pre) -> None:  # noqa: ANN001
    s = _stream(files, pre)
    assert len(s) == s.num_rows == ROWS and len(s.pieces) == 7
    assert s.num_batches(1000) == 20 and s.num_batches(3000) == 7 and s.num_batches(3000, drop_last=True) == 6
    assert [len(list(s.batches(3000, drop_last=d))) for d in (False, True)] == [7, 6]
    sizes = [int(b["labels"].shape[0]) for b in s.batches(3000, shuffle=True)]
    assert sizes == [3000] * 6 + [2000]


@pytest.mark.parametrize("buffer", [0, 5000, 100_000])
def test_every_row_once_per_epoch(files: list[str], pre, buffer: int) -> None:  # noqa: ANN001
    s = _stream(files, pre, shuffle_buffer=buffer)
    for shuffle in (False, True):
        ids = _ids(s, 700, shuffle=shuffle, seed=1, epoch=2)
        assert len(ids) == ROWS and np.array_equal(np.sort(ids), np.arange(ROWS))
    assert np.array_equal(_ids(s, 700), np.arange(ROWS))  # unshuffled = file order


def test_shuffle_is_seeded_and_differs_per_epoch(files: list[str], pre) -> None:  # noqa: ANN001
    s = _stream(files, pre)
    e0, e0_again, e1 = (_ids(s, shuffle=True, seed=5, epoch=e) for e in (0, 0, 1))
    other_seed = _ids(s, shuffle=True, seed=6, epoch=0)
    assert np.array_equal(e0, e0_again)
    assert not np.array_equal(e0, e1) and not np.array_equal(e0, other_seed)
    # rows are mixed across row groups: the buffer (5,000 rows) holds two 3,000-row groups at first
    assert len(np.unique(e0[:1000] // 3000)) >= 2


def test_prefetch_does_not_change_the_order(files: list[str], pre) -> None:  # noqa: ANN001
    a = _ids(_stream(files, pre, prefetch=0), shuffle=True, seed=2, epoch=1)
    b = _ids(_stream(files, pre, prefetch=3), shuffle=True, seed=2, epoch=1)
    assert np.array_equal(a, b)


def test_shards_are_disjoint_and_cover_all_rows(files: list[str], pre) -> None:  # noqa: ANN001
    s = _stream(files, pre)
    for world in (2, 3):
        shards = [s.shard(r, world, equalize=False) for r in range(world)]
        ids = [_ids(sh, shuffle=True, seed=0, epoch=0) for sh in shards]
        assert sum(len(x) for x in ids) == ROWS
        assert np.array_equal(np.sort(np.concatenate(ids)), np.arange(ROWS))
        assert {p for sh in shards for p in sh.pieces} == set(s.pieces)
        even = [s.shard(r, world) for r in range(world)]
        lengths = {len(sh) for sh in even}
        assert len(lengths) == 1
        assert {sh.num_batches(512) for sh in even} == {len(list(sh.batches(512, shuffle=True))) for sh in even}
        seen = np.concatenate([_ids(sh, shuffle=True) for sh in even])
        assert len(np.unique(seen)) == len(seen) == lengths.pop() * world
    with pytest.raises(DataError, match="cannot shard"):
        s.shard(0, 8)


@pytest.mark.parametrize("shuffle", [False, True])
def test_start_batch_skips_exactly(files: list[str], pre, shuffle: bool) -> None:  # noqa: ANN001
    s = _stream(files, pre)
    full = list(s.batches(900, shuffle=shuffle, seed=4, epoch=1))
    for start in (0, 3, 7, len(full) - 1, len(full)):
        tail = list(s.batches(900, shuffle=shuffle, seed=4, epoch=1, start_batch=start))
        assert len(tail) == len(full) - start
        for a, b in zip(tail, full[start:], strict=True):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_limit_and_early_stop(files: list[str], pre) -> None:  # noqa: ANN001
    s = _stream(files, pre).limit(4321)
    ids = _ids(s, 1000, shuffle=True)
    assert len(ids) == 4321 == len(s) and len(np.unique(ids)) == 4321 and s.num_batches(1000) == 5
    it = s.batches(100, shuffle=True)
    next(it)
    it.close()  # stops the prefetch thread without hanging


def test_stream_encoding_matches_in_memory(files: list[str], pre) -> None:  # noqa: ANN001
    spec = load_spec("synthetic")
    frame, _ = read_files(spec, files, Path("."))
    expected, _ = pre.transform(frame)
    got = materialize(ParquetStream(row_groups(files), pre))
    assert isinstance(got, TensorDataset) and len(got) == ROWS
    for k, v in expected.items():
        assert torch.equal(got.tensors[k], v), k


def test_fit_on_a_bounded_sample(files: list[str], pre) -> None:  # noqa: ANN001
    assert pre.fitted_rows == 8000
    assert pre.scenarios == [str(i) for i in range(8)]  # from the full scan, rare ones included
    assert pre.source_checksum.startswith("footers:")
    counts = _stream(files, pre).scenario_counts()
    assert int(counts.sum()) == ROWS and counts[0] > 100 * counts[-1]


def test_split_by_files(files: list[str]) -> None:
    parts = split_files(files, [0.5, 0.25, 0.25], seed=1)
    assert sorted(f for v in parts.values() for f in v) == sorted(files)
    assert [len(parts[k]) for k in ("train", "valid", "test")] == [2, 1, 1]
    with pytest.raises(DataError, match="cannot split 2 file"):
        split_files(files[:2], [0.8, 0.1, 0.1], seed=0)
    data = stream_splits("synthetic", overrides={"files.path": str(Path(files[0]).parent / "*.parquet")}, fit_rows=3000)
    assert sum(len(s) for s in data.splits.values()) == ROWS
    assert not set(data.files["train"]) & set(data.files["test"])
    valid = data.materialize("valid")
    assert len(valid) == len(data.splits["valid"])
