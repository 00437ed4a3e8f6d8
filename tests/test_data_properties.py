"""Property tests for the CSV reader: generated files never give a traceback or a silently changed value.

Each example writes a CSV with random text (separators, quotes, newlines, non-ASCII), numbers (including
inf / -inf / nan), blank lines, rows with a field too many or too few, and stray bytes. Reading it must
either raise a one-line :class:`DataError` that names the file and the right line, or return exactly the
values written, each with the physical line its record starts on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from msmtrec.data.reader import BAD_ROWS, LINE_COL, read_dataset
from msmtrec.data.spec import load_spec
from msmtrec.errors import DataError

NA = {"", "NA", "NaN", "nan", "null", "?"}
COLUMNS = ["c1", "x", "scen", "click"]

text_cell = st.one_of(
    st.text(alphabet=st.sampled_from(list('ab é,"\n\r')), max_size=6),
    st.sampled_from(["NA", "?", "null", "  ", '5"', 'a"b', 'x""y']),
)
number_cell = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.sampled_from(["inf", "-inf", "nan", "", "0", "-0.0", "1e300"]),
)


@dataclass
class Record:
    cells: list[str]
    blank_before: int
    extra: int
    """Fields added (+1) or removed (-1) to break the structure, 0 for a valid row."""


records = st.lists(
    st.builds(
        Record,
        st.tuples(text_cell, number_cell, st.sampled_from(["s0", "s1"]), st.sampled_from(["0", "1"])).map(list),
        st.integers(0, 2),
        st.sampled_from([0] * 30 + [1, -1]),
    ),
    min_size=1,
    max_size=25,
)


def quote(cell: str) -> str:
    """As a careful writer would: quote when needed, otherwise (sometimes) leave a mid-field quote bare."""
    if any(c in cell for c in ',\n\r') or cell.startswith('"') or cell != cell.strip(" ") and cell.strip(" ") == "":
        return '"' + cell.replace('"', '""') + '"'
    return cell


def render(recs: list[Record]) -> tuple[str, list[int]]:
    """The file's text and, per record, the 1-based line it starts on."""
    parts, starts, line = [",".join(COLUMNS)], [], 2
    for r in recs:
        for _ in range(r.blank_before):
            parts.append("")
            line += 1
        cells = list(r.cells)
        if r.extra > 0:
            cells.append("9")
        elif r.extra < 0:
            cells.pop()
        text = ",".join(quote(c) for c in cells)
        starts.append(line)
        parts.append(text)
        line += text.count("\n") + 1  # a carriage return inside quotes is a character, not a line
    return "\n".join(parts) + "\n", starts


def write_spec(tmp: Path, bad_rows: str) -> Path:
    spec = tmp / "s.yaml"
    spec.write_text(
        f"name: prop\nfiles: {{path: {tmp}/d.csv, bad_rows: {bad_rows}}}\nscenario: {{column: scen}}\n"
        "tasks: [{name: click, label: click}]\nfeatures: {sparse: [c1], dense: [x]}\n"
    )
    return spec


def expected_text(cell: str) -> str | None:
    return None if cell in NA else cell


def expected_number(cell: str) -> float:
    return math.nan if cell in NA else float(cell)


def same_number(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def check_frame(frame, recs: list[Record], starts: list[int]) -> None:  # noqa: ANN001
    assert len(frame) == len(recs)
    assert frame[LINE_COL].tolist() == starts
    for i, r in enumerate(recs):
        got = frame.iloc[i]
        want_c1 = expected_text(r.cells[0])
        assert (got["c1"] if isinstance(got["c1"], str) else None) == want_c1, (i, r.cells[0], got["c1"])
        assert same_number(float(got["x"]), expected_number(r.cells[1])), (i, r.cells[1], got["x"])
        assert got["scen"] == r.cells[2] and str(got["click"]) == r.cells[3]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=records)
def test_reader_errors_or_reads_back_exactly(tmp_path: Path, recs: list[Record]) -> None:
    text, starts = render(recs)
    (tmp_path / "d.csv").write_text(text, encoding="utf-8", newline="")
    bad = [i for i, r in enumerate(recs) if r.extra]
    try:
        raw = read_dataset(load_spec(write_spec(tmp_path, "error")))
    except DataError as e:
        msg = str(e)
        assert "\n" not in msg and "d.csv" in msg
        assert bad, f"unexpected error: {msg}"
        assert f"d.csv:{starts[bad[0]]}: expected 4 fields" in msg
        return
    assert not bad, "a malformed row was read silently"
    event("irregular quoting" if any('"' in c and quote(c) == c for r in recs for c in r.cells) else "plain quoting")
    check_frame(raw.frame, recs, starts)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=records)
def test_skipping_bad_rows_keeps_every_other_value(tmp_path: Path, recs: list[Record]) -> None:
    text, starts = render(recs)
    (tmp_path / "d.csv").write_text(text, encoding="utf-8", newline="")
    good = [i for i, r in enumerate(recs) if not r.extra]
    try:
        raw = read_dataset(load_spec(write_spec(tmp_path, "skip")))
    except DataError as e:
        assert not good and "no rows" in str(e) and "\n" not in str(e)
        return
    assert raw.dropped.get(BAD_ROWS, 0) == len(recs) - len(good)
    check_frame(raw.frame, [recs[i] for i in good], [starts[i] for i in good])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=records, data=st.data())
def test_a_stray_byte_is_an_error_at_its_line(tmp_path: Path, recs: list[Record], data: st.DataObject) -> None:
    recs = [Record(r.cells, r.blank_before, 0) for r in recs]
    text, starts = render(recs)
    raw_bytes = text.encode("utf-8")
    boundaries = [i for i in range(len(raw_bytes)) if not 0x80 <= raw_bytes[i] < 0xC0]  # not inside a character
    at = data.draw(st.sampled_from(boundaries))
    broken = raw_bytes[:at] + b"\xff" + raw_bytes[at:]
    (tmp_path / "d.csv").write_bytes(broken)
    line = broken.count(b"\n", 0, at) + 1
    with pytest.raises(DataError, match=rf"d\.csv:{line}: byte 0xff at offset {at:,} .* is not valid utf-8") as e:
        read_dataset(load_spec(write_spec(tmp_path, "error")))
    assert "\n" not in str(e.value)
