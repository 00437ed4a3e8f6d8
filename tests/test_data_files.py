"""Raw files: CSV structure, encodings, compression and non-finite numbers fail or are reported, never silently."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from msmtrec.data.pipeline import prepare_dataset
from msmtrec.data.reader import BAD_ROWS, LINE_COL, read_dataset
from msmtrec.data.spec import load_spec
from msmtrec.errors import DataError

HEADER = "c1,x,scen,click,spend"


def rows(n: int, seed: int = 0) -> list[str]:
    """``n`` valid CSV lines matching :data:`HEADER` (both scenarios, both labels present)."""
    rng = np.random.default_rng(seed)
    return [
        f"{rng.choice(['a', 'b', 'c'])},{rng.normal():.3f},s{i % 2},{(i // 2) % 2},{rng.exponential(5):.2f}"
        for i in range(n)
    ]


def spec_for(tmp_path: Path, path: str = "d.csv", extra: str = "") -> Path:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"name: tiny\nfiles:\n  path: {tmp_path}/{path}\n{extra}scenario: {{column: scen}}\n"
        "tasks:\n  - {name: click, label: click}\n  - {name: spend, label: spend, type: regression}\n"
        "features:\n  sparse: [c1]\n  dense: [x]\nsplit: {seed: 1}\n"
    )
    return spec


def write(tmp_path: Path, lines: list[str], name: str = "d.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "msmtrec.cli", *args], capture_output=True, text=True)


# ------------------------------------------------------------------------------------------ field counts


def test_row_with_an_extra_field_is_an_error_naming_file_line_and_counts(tmp_path: Path) -> None:
    lines = [HEADER, *rows(40)]
    lines[12] += ",1"  # line 13: one field too many would shift values into other columns
    write(tmp_path, lines)
    with pytest.raises(DataError, match=r"d\.csv:13: expected 5 fields \(as in the header\), found 6"):
        read_dataset(load_spec(spec_for(tmp_path)))


def test_first_row_with_an_extra_field_does_not_shift_columns(tmp_path: Path) -> None:
    lines = [HEADER, *rows(40)]
    lines[1] = "a,1.0,s0,0,2.5,1"  # pandas would take the first column as an index and shift the rest
    write(tmp_path, lines)
    with pytest.raises(DataError, match=r"d\.csv:2: expected 5 fields .* found 6"):
        read_dataset(load_spec(spec_for(tmp_path)))


def test_row_one_field_short_is_an_error_not_a_missing_value(tmp_path: Path) -> None:
    lines = [HEADER, *rows(40)]
    lines[20] = "a,1.0,s0,0"
    write(tmp_path, lines)
    with pytest.raises(DataError, match=r"d\.csv:21: expected 5 fields .* found 4 \(1 such row"):
        read_dataset(load_spec(spec_for(tmp_path)))


def test_bad_rows_skip_counts_and_reports(tmp_path: Path) -> None:
    lines = [HEADER, *rows(60)]
    lines[5] += ",9"
    lines[30] = "b,1"
    write(tmp_path, lines)
    p = prepare_dataset(spec_for(tmp_path, extra="  bad_rows: skip\n"))
    assert p.report["dropped"][BAD_ROWS] == 2
    assert sum(p.report["rows"].values()) == 58
    r = cli("data", "inspect", str(tmp_path / "s.yaml"))
    assert r.returncode == 0, r.stderr
    assert f"dropped on purpose ({BAD_ROWS}): 2 rows" in r.stdout


def test_skipped_rows_leave_the_other_values_and_line_numbers_intact(tmp_path: Path) -> None:
    lines = [HEADER, *rows(30)]
    lines[3] += ",9"
    write(tmp_path, lines)
    raw = read_dataset(load_spec(spec_for(tmp_path, extra="  bad_rows: skip\n")))
    expect = pd.read_csv(tmp_path / "d.csv", skiprows=[3], dtype={"c1": str})
    assert raw.frame["x"].tolist() == expect["x"].tolist()
    assert raw.frame[LINE_COL].tolist() == [n for n in range(2, 32) if n != 4]


def test_line_numbers_do_not_drift_after_blank_lines_and_quoted_newlines(tmp_path: Path) -> None:
    lines = [HEADER, *rows(20)]
    lines[4] = '"multi\nline",0.5,s0,0,1.0'  # one record over lines 5-6
    lines.insert(8, "")  # a blank line (line 10) that pandas skips
    lines.insert(9, "   ")
    lines[15] = lines[15].replace(",0,", ",7,").replace(",1,", ",7,")  # a bad label on physical line 17
    write(tmp_path, lines)
    with pytest.raises(DataError, match=r"d\.csv:17: label 'click' of binary task 'click' must be 0 or 1, got 7"):
        prepare_dataset(spec_for(tmp_path))


def test_line_numbers_after_blank_lines_plain_file(tmp_path: Path) -> None:
    lines = [HEADER, *rows(20)]
    lines.insert(3, "")
    lines.insert(3, "")
    lines[10] += ",x"
    write(tmp_path, lines)
    with pytest.raises(DataError, match=r"d\.csv:11: expected 5 fields"):
        read_dataset(load_spec(spec_for(tmp_path)))


def test_headerless_files_count_against_the_column_names(tmp_path: Path) -> None:
    lines = rows(30)
    lines[7] += ",1"
    write(tmp_path, lines)
    extra = "  header: false\n  columns: [c1, x, scen, click, spend]\n"
    with pytest.raises(DataError, match=r"d\.csv:8: expected 5 fields .* found 6"):
        read_dataset(load_spec(spec_for(tmp_path, extra=extra)))


# -------------------------------------------------------------------------------- encoding, compression


def test_non_utf8_byte_names_line_and_offset(tmp_path: Path) -> None:
    lines = [HEADER, *rows(30)]
    lines[6] = "caf\xe9," + lines[6].split(",", 1)[1]
    (tmp_path / "d.csv").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"d\.csv:7: byte 0xe9 at offset [\d,]+ \(column 4\) is not valid utf-8"):
        read_dataset(load_spec(spec_for(tmp_path)))
    raw = read_dataset(load_spec(spec_for(tmp_path, extra="  encoding: latin-1\n")))
    assert raw.frame["c1"].iloc[5] == "café"


def test_truncated_gzip_is_one_line(tmp_path: Path) -> None:
    blob = gzip.compress(("\n".join([HEADER, *rows(3000)]) + "\n").encode())
    (tmp_path / "d.csv.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"d\.csv\.gz: truncated gz file: the compressed stream ends after"):
        read_dataset(load_spec(spec_for(tmp_path, path="d.csv.gz")))
    (tmp_path / "e.csv.gz").write_bytes(b"not gzip at all\n")
    with pytest.raises(DataError, match=r"e\.csv\.gz: not a valid gz file"):
        read_dataset(load_spec(spec_for(tmp_path, path="e.csv.gz")))


def test_directory_where_a_file_is_expected(tmp_path: Path) -> None:
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(DataError, match=r"d\.csv: is a directory; expected a CSV file"):
        read_dataset(load_spec(spec_for(tmp_path, extra="  format: csv\n")))
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "x.txt").write_text("hello\n")
    with pytest.raises(DataError, match=r"folder: cannot read as Parquet"):
        read_dataset(load_spec(spec_for(tmp_path, path="folder")))


def test_cli_reports_file_faults_in_one_line_exit_2(tmp_path: Path) -> None:
    blob = gzip.compress(("\n".join([HEADER, *rows(3000)]) + "\n").encode())
    (tmp_path / "d.csv.gz").write_bytes(blob[:-40])
    spec_for(tmp_path, path="d.csv.gz")
    r = cli("data", "prepare", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "truncated gz file" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------ non-finite


def test_non_finite_numbers_are_counted_like_missing_values(tmp_path: Path) -> None:
    lines = [HEADER, *rows(60)]
    lines[3] = "a,inf,s0,0,1.0"
    lines[4] = "b,-inf,s1,0,1.0"
    lines[5] = "c,,s0,0,1.0"
    write(tmp_path, lines)
    p = prepare_dataset(spec_for(tmp_path))
    assert p.report["non_finite"] == {"x": 2}
    assert p.report["missing"]["x"] == 1
    assert sum(sum(r.get("x", 0) for r in [v]) for v in p.report["imputed"].values()) == 3
    r = cli("data", "inspect", str(tmp_path / "s.yaml"))
    assert r.returncode == 0, r.stderr
    assert "Missing values: none" not in r.stdout
    table = r.stdout.split("Missing and non-finite values")[1]
    assert [ln.split() for ln in table.splitlines() if ln.startswith("x ")] == [["x", "1", "2"]]


def test_train_prints_non_finite_and_skipped_rows(tmp_path: Path) -> None:
    lines = [HEADER, *rows(200)]
    lines[3] = "a,inf,s0,0,1.0"
    lines[9] += ",1"
    write(tmp_path, lines)
    spec_for(tmp_path, extra="  bad_rows: skip\n")
    r = cli("train", "--model", "shared_bottom", "--data", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run"),
            "--epochs", "1")
    assert r.returncode == 0, r.stderr
    assert f"data: dropped on purpose ({BAD_ROWS}): 1 rows" in r.stdout
    assert "data: non-finite numbers (inf/-inf, imputed): x 1" in r.stdout


def test_non_finite_regression_label_is_an_error(tmp_path: Path) -> None:
    lines = [HEADER, *rows(40)]
    lines[9] = "a,0.1,s0,0,inf"
    write(tmp_path, lines)
    with pytest.raises(DataError, match=r"d\.csv:10: label 'spend' of regression task 'spend' must be a finite number"):
        prepare_dataset(spec_for(tmp_path))


def test_old_mac_line_ends_and_crlf_read_like_newlines(tmp_path: Path) -> None:
    lines = [HEADER, *rows(30)]
    for name, end in (("cr.csv", "\r"), ("crlf.csv", "\r\n")):
        (tmp_path / name).write_bytes((end.join(lines) + end).encode())
        raw = read_dataset(load_spec(spec_for(tmp_path, path=name)))
        assert raw.frame[LINE_COL].tolist() == list(range(2, 32))
        assert raw.frame["scen"].tolist() == [f"s{i % 2}" for i in range(30)]
    lines[4] += ",1"
    (tmp_path / "cr.csv").write_bytes(("\r".join(lines) + "\r").encode())
    with pytest.raises(DataError, match=r"cr\.csv:5: expected 5 fields"):
        read_dataset(load_spec(spec_for(tmp_path, path="cr.csv")))


def test_hashed_ids_report_values_never_seen_in_training() -> None:
    from msmtrec.data.encoders import HashEncoder, encoder_from_dict

    train_ids = pd.Series([f"u{i}" for i in range(5000)] + [None])
    enc = HashEncoder(buckets=100).fit(train_ids)
    new = pd.Series([f"u{i}" for i in range(4000, 6000)] + [None])  # 1,000 known, 1,000 brand-new
    codes, unseen = enc.transform(new)
    assert 1000 * (1 - 0.02) <= unseen <= 1000 and enc.seen_false_positive < 0.01
    assert codes[-1] == 0
    again = encoder_from_dict(json.loads(json.dumps(asdict(enc))))  # survives the JSON artifact
    assert again.transform(new)[1] == unseen
    assert np.array_equal(again.transform(new)[0], codes)
    assert HashEncoder(buckets=100).transform(new)[1] == 0  # an artifact without the filter: nothing claimed


def test_hashed_filter_grows_with_a_warm_start_window() -> None:
    from msmtrec.data.encoders import HashEncoder

    enc = HashEncoder(buckets=100).fit(pd.Series([f"u{i}" for i in range(1000)]))
    new = pd.Series([f"u{i}" for i in range(1000, 1500)])
    assert enc.transform(new)[1] >= 490
    before = enc.transform(new)[0]
    enc.add(new)
    assert enc.transform(new)[1] == 0 and np.array_equal(enc.transform(new)[0], before)
