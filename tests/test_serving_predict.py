"""Batch prediction: streamed in chunks, OOV counted, ids kept, original units, clear scenario errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from msmtrec.errors import DataError
from msmtrec.serving import predict as predict_mod
from msmtrec.serving.predict import predict_file
from msmtrec.serving.scorer import Scorer
from msmtrec.serving.testing import make_run_dir, raw_rows


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("run") / "sb", "shared_bottom")


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    frame = raw_rows(1000)
    frame.insert(0, "customer", [f"c{i}" for i in range(len(frame))])
    frame.loc[[3, 10, 500], "channel"] = "Carrier pigeon"  # unseen in training → OOV bucket
    return frame


def test_predict_cli_streams_csv_in_chunks_and_counts_oov(
    run_dir: Path, rows: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from msmtrec.cli import main

    src = tmp_path / "in.csv"
    rows.to_csv(src, index=False)
    seen: list[int] = []
    original = predict_mod.read_chunks

    def spy(*args: object, **kwargs: object):  # noqa: ANN202 - generator passthrough
        for frame, ids in original(*args, **kwargs):
            seen.append(len(frame))
            yield frame, ids

    monkeypatch.setattr(predict_mod, "read_chunks", spy)
    out = tmp_path / "out.csv"
    try:
        main(["predict", str(run_dir), "--input", str(src), "--output", str(out), "--chunk-rows", "300",
              "--keep", "customer"])
    except SystemExit as e:
        assert e.code in (0, None)
    assert seen == [300, 300, 300, 100]
    printed = capsys.readouterr().out
    assert "rows/s" in printed and "4 chunk(s)" in printed
    assert any(line.split()[:2] == ["channel", "3"] for line in printed.splitlines())

    result = pd.read_csv(out)
    assert list(result.columns) == ["customer", "visit", "conversion", "spend"]
    assert len(result) == 1000 and result["customer"].tolist() == rows["customer"].tolist()
    assert result["visit"].between(0, 1).all() and result["conversion"].between(0, 1).all()

    # chunking does not change the numbers
    whole = predict_file(run_dir, src, tmp_path / "whole.csv", chunk_rows=10_000)
    assert whole.transform.oov["channel"] == 3 and whole.chunks == 1
    np.testing.assert_allclose(pd.read_csv(tmp_path / "whole.csv")["visit"], result["visit"], rtol=1e-6)


def test_predict_regression_in_original_units(run_dir: Path, rows: pd.DataFrame, tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    rows.to_parquet(src, index=False)
    report = predict_file(run_dir, src, tmp_path / "out.parquet", chunk_rows=256)
    assert report.rows == 1000 and report.chunks == 4
    out = pd.read_parquet(tmp_path / "out.parquet")
    scorer = Scorer.load(run_dir)
    batch, _ = scorer.pre.transform(rows, with_labels=False)
    import torch

    with torch.inference_mode():
        raw = scorer.model(batch)
    # spend is trained on log1p(dollars): the output is expm1 of the model's value
    np.testing.assert_allclose(out["spend"], np.expm1(raw["spend"].double().numpy()), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["visit"], torch.sigmoid(raw["visit"]).double().numpy(), rtol=1e-5)


def test_predict_gzip_csv_output(run_dir: Path, rows: pd.DataFrame, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    rows.to_csv(src, index=False)
    predict_file(run_dir, src, tmp_path / "out.csv.gz", chunk_rows=400)
    assert len(pd.read_csv(tmp_path / "out.csv.gz")) == 1000


def test_unseen_scenario_is_a_clear_error(run_dir: Path, rows: pd.DataFrame, tmp_path: Path) -> None:
    bad = rows.copy()
    bad.loc[700, "segment"] = "Kids E-Mail"
    src = tmp_path / "in.csv"
    bad.to_csv(src, index=False)
    out = tmp_path / "out.csv"
    with pytest.raises(DataError, match=r"in\.csv:702: scenario 'Kids E-Mail'"):
        predict_file(run_dir, src, out, chunk_rows=300)
    assert not out.exists() and not list(tmp_path.glob(".out.csv*"))  # no half-written output


def test_missing_column_is_a_clear_error(run_dir: Path, rows: pd.DataFrame, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    rows.drop(columns=["zip_code"]).to_csv(src, index=False)
    with pytest.raises(DataError, match="zip_code"):
        predict_file(run_dir, src, tmp_path / "out.csv")


def test_predict_cli_error_exits_2(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from msmtrec.cli import main

    with pytest.raises(SystemExit) as e:
        main(["predict", str(run_dir), "--input", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "o.csv")])
    assert e.value.code == 2
    assert "no such input file" in capsys.readouterr().err


def test_keep_a_label_column_beside_its_prediction(run_dir: Path, rows: pd.DataFrame, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    rows.to_csv(src, index=False)
    predict_file(run_dir, src, tmp_path / "out.csv", keep=["visit", "customer"])
    result = pd.read_csv(tmp_path / "out.csv")
    assert list(result.columns) == ["visit_label", "customer", "visit", "conversion", "spend"]
    assert result["visit_label"].tolist() == rows["visit"].tolist()
    assert result["visit"].between(0, 1).all()


def test_predict_checks_csv_structure_and_names_exact_lines(run_dir: Path, rows: pd.DataFrame, tmp_path: Path) -> None:
    text = rows.head(50).to_csv(index=False).splitlines()
    text.insert(5, "")  # a blank line: later rows sit one line lower than their row number says
    text[20] += ",extra"  # physical line 21: one field too many would shift values into other columns
    (tmp_path / "bad.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"bad\.csv:21: expected \d+ fields \(as in the header\), found \d+"):
        predict_file(run_dir, tmp_path / "bad.csv", tmp_path / "out.csv")
    text[20] = text[20][: -len(",extra")]
    col = text[0].split(",").index("recency")
    cells = text[30].split(",")
    cells[col] = "soon"
    text[30] = ",".join(cells)
    (tmp_path / "bad.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"bad\.csv:31: column 'recency' expected a number, got 'soon'"):
        predict_file(run_dir, tmp_path / "bad.csv", tmp_path / "out.csv")


def test_predict_reads_large_csv_in_blocks_like_one_read(
    run_dir: Path, rows: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import msmtrec.data.reader as reader

    src = tmp_path / "in.csv"
    rows.to_csv(src, index=False)
    whole = predict_file(run_dir, src, tmp_path / "whole.csv", chunk_rows=256)
    original = reader.iter_csv_chunks
    monkeypatch.setattr(reader, "iter_csv_chunks", lambda *a, **k: original(*a, **{**k, "block_bytes": 4096}))
    monkeypatch.setattr(predict_mod, "iter_csv_chunks", reader.iter_csv_chunks)
    small = predict_file(run_dir, src, tmp_path / "blocks.csv", chunk_rows=256)
    assert small.rows == whole.rows == 1000 and small.chunks == whole.chunks == 4
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "blocks.csv"), pd.read_csv(tmp_path / "whole.csv"))
