"""Data layer: shipped specs load their data, encoders fit on train only, and bad input fails clearly."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from shipped_data import FIXTURE_OVERRIDES, HAVE_DATA, ROOT

from msmtrec.data.pipeline import load_prepared, prepare_dataset, save_prepared
from msmtrec.data.preprocessor import Preprocessor
from msmtrec.data.spec import load_spec, shipped_specs
from msmtrec.errors import DataError, SpecError

needs_data = pytest.mark.skipif(not HAVE_DATA, reason=f"shared data not found at {ROOT}")


@pytest.fixture(scope="module")
def hillstrom():
    return prepare_dataset("hillstrom")


# ------------------------------------------------------------------------------------- real datasets


@needs_data
def test_hillstrom_counts_and_rates(hillstrom) -> None:
    scen = torch.cat([hillstrom.splits[k].tensors["scenario"] for k in ("train", "valid", "test")])
    names = hillstrom.schema.scenarios
    counts = {names[i]: int((scen == i).sum()) for i in range(len(names))}
    assert counts == {"Mens E-Mail": 21307, "Womens E-Mail": 21387, "No E-Mail": 21306}
    visits = np.concatenate([hillstrom.raw_labels[k][:, 0] for k in ("train", "valid", "test")])
    assert round(100 * visits.mean(), 2) == 14.68
    assert sum(hillstrom.report["rows"].values()) == 64000
    assert hillstrom.report["funnel_violations"] == {"conversion": 0}


@needs_data
def test_split_is_stratified_and_disjoint(hillstrom) -> None:
    rows = hillstrom.report["rows"]
    assert abs(rows["train"] / 64000 - 0.8) < 0.002 and abs(rows["valid"] / 64000 - 0.1) < 0.002
    for i in range(3):
        share = [float((hillstrom.splits[k].tensors["scenario"] == i).float().mean()) for k in ("train", "test")]
        assert abs(share[0] - share[1]) < 0.01


@needs_data
def test_encoders_fit_on_train_only(hillstrom) -> None:
    # the dense standardiser's statistics are those of the training split, not of all rows
    train_recency = hillstrom.splits["train"].tensors["dense"][:, 0]
    assert abs(float(train_recency.mean())) < 1e-4
    assert abs(float(train_recency.std()) - 1) < 1e-3
    assert hillstrom.preprocessor.fitted_rows == hillstrom.report["rows"]["train"]


@needs_data
def test_census_labels_match_the_mmoe_setup() -> None:
    p = prepare_dataset("census_kdd")
    y = np.concatenate([p.raw_labels[k] for k in ("train", "valid", "test")])
    assert len(y) == 99762
    assert abs(y[:, 0].mean() - 0.062) < 0.001  # income > 50k
    assert abs(y[:, 1].mean() - 0.433) < 0.001  # never married
    assert p.schema.scenarios == ("Female", "Male")
    assert "marital_status" not in [f.name for f in p.schema.sparse]


@needs_data
@pytest.mark.parametrize("name", sorted(FIXTURE_OVERRIDES))
def test_fixtures_load_with_shipped_specs(name: str) -> None:
    p = prepare_dataset(name, overrides=FIXTURE_OVERRIDES[name])
    assert sum(p.report["rows"].values()) > 0
    for ds in p.splits.values():
        assert ds.tensors["labels"].shape[1] == len(p.schema.tasks)
        assert torch.isfinite(ds.tensors["dense"]).all()


def test_every_shipped_spec_parses() -> None:
    assert {"hillstrom", "census_kdd", "aliexpress", "ali_ccp", "kuairand"} <= set(shipped_specs())
    for name in shipped_specs():
        assert load_spec(name).tasks


@needs_data
def test_prepare_save_and_reload_roundtrip(hillstrom, tmp_path: Path) -> None:
    save_prepared(hillstrom, tmp_path)
    again = load_prepared(tmp_path)
    for k in ("train", "test"):
        for key, t in hillstrom.splits[k].tensors.items():
            assert torch.equal(t, again.splits[k].tensors[key]), key
    artifact = json.loads((tmp_path / "preprocessor.json").read_text())
    assert artifact["source_checksum"].startswith("ff9e59285e9dc3f5")
    assert artifact["schema"]["tasks"][1]["inside"] == "visit"


@needs_data
def test_preprocessor_reload_transforms_identically(hillstrom, tmp_path: Path) -> None:
    hillstrom.preprocessor.save(tmp_path)
    pre = Preprocessor.load(tmp_path)
    frame = pd.read_csv(
        ROOT / "hillstrom" / "hillstrom.csv", nrows=50, dtype={"mens": str, "womens": str, "newbie": str}
    )
    a, _ = hillstrom.preprocessor.transform(frame, with_labels=False)
    b, _ = pre.transform(frame, with_labels=False)
    for k in a:
        assert torch.equal(a[k], b[k])


# ---------------------------------------------------------------------------------------- encoders


def test_sequence_encoder_keeps_most_recent_items() -> None:
    from msmtrec.data.encoders import SequenceEncoder

    enc = SequenceEncoder(sep="|", max_len=3).fit(pd.Series(["a|b", "b|c|d|e", None]))
    codes, oov = enc.transform(pd.Series(["a|b|c|d", "zz", None]))
    voc = {v: i + 2 for i, v in enumerate(enc.vocabulary)}
    assert codes[0].tolist() == [voc["b"], voc["c"], voc["d"]]
    assert codes[1].tolist() == [0, 0, 1] and oov == 1
    assert codes[2].tolist() == [0, 0, 0]


def test_vocab_min_count_and_hashing() -> None:
    from msmtrec.data.encoders import HashEncoder, VocabEncoder

    enc = VocabEncoder(min_count=2).fit(pd.Series(["a", "a", "b", None]))
    codes, oov = enc.transform(pd.Series(["a", "b", "c", None]))
    assert codes.tolist() == [1, 0, 0, 0] and oov == 2
    h = HashEncoder(buckets=7)
    c1, _ = h.transform(pd.Series(["u1", "u2", None]))
    c2, _ = h.transform(pd.Series(["u1", "u2", None]))
    assert c1.tolist() == c2.tolist() and c1[2] == 0 and 1 <= c1[0] <= 7


def test_bucketize_dense_becomes_sparse_field(tmp_path: Path) -> None:
    spec = _write_spec(tmp_path, extra_dense="    - {name: x, transform: bucketize, buckets: 4}\n")
    _write_csv(tmp_path / "d.csv", 400)
    p = prepare_dataset(spec)
    names = [f.name for f in p.schema.sparse]
    assert "x" in names and "x" not in p.schema.dense
    assert p.schema.sparse[names.index("x")].vocab_size <= 6


def test_filter_drops_are_counted(tmp_path: Path) -> None:
    spec = _write_spec(tmp_path, extra="filter: 'y >= 0.5'\n")
    _write_csv(tmp_path / "d.csv", 400)
    p = prepare_dataset(spec)
    assert p.report["dropped"]["filter"] > 0
    assert sum(p.report["rows"].values()) + p.report["dropped"]["filter"] == 400


def test_time_split_orders_by_time(tmp_path: Path) -> None:
    spec = _write_spec(tmp_path, split="split: {method: time, time_column: t}\n")
    _write_csv(tmp_path / "d.csv", 500)
    p = prepare_dataset(spec)
    assert p.report["rows"] == {"train": 400, "valid": 50, "test": 50}


def test_gzip_and_parquet_inputs(tmp_path: Path) -> None:
    frame = _frame(300)
    with gzip.open(tmp_path / "d.csv.gz", "wt") as f:
        frame.to_csv(f, index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    a = prepare_dataset(_write_spec(tmp_path, path="d.csv.gz"))
    b = prepare_dataset(_write_spec(tmp_path, path="d.parquet", name="p.yaml"))
    for k in ("sparse", "dense", "labels", "scenario"):
        assert torch.equal(a.splits["train"].tensors[k], b.splits["train"].tensors[k]), k


def test_scenario_from_file_names(tmp_path: Path) -> None:
    (tmp_path / "shop_A").mkdir()
    (tmp_path / "shop_B").mkdir()
    _frame(200, seed=1).drop(columns=["scen"]).to_csv(tmp_path / "shop_A" / "x.csv", index=False)
    _frame(100, seed=2).drop(columns=["scen"]).to_csv(tmp_path / "shop_B" / "x.csv", index=False)
    text = _spec_text(path="shop_*/x.csv").replace("scenario: {column: scen}", "scenario: {}")
    text = text.replace("files:\n", "files:\n  scenario_pattern: 'shop_(?P<scenario>[A-Z])'\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(text)
    p = prepare_dataset(spec, data_root=tmp_path)
    assert p.schema.scenarios == ("A", "B")


# --------------------------------------------------------------------------------------- bad input


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    _frame(50).drop(columns=["c1"]).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"d\.csv: missing column\(s\) \['c1'\]"):
        prepare_dataset(_write_spec(tmp_path))


def test_non_numeric_dense_names_file_line_and_value(tmp_path: Path) -> None:
    f = _frame(50)
    f["x"] = f["x"].astype(object)
    f.loc[7, "x"] = "twelve"
    f.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"d\.csv:9: column 'x' expected a number, got 'twelve'"):
        prepare_dataset(_write_spec(tmp_path))


def test_binary_label_outside_01(tmp_path: Path) -> None:
    f = _frame(50)
    f.loc[3, "click"] = 2
    f.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"d\.csv:5: label 'click' of binary task 'click' must be 0 or 1, got 2"):
        prepare_dataset(_write_spec(tmp_path))


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("")
    with pytest.raises(DataError, match=r"d\.csv: the file is empty"):
        prepare_dataset(_write_spec(tmp_path))
    (tmp_path / "d.csv").write_text(",".join(_frame(1).columns) + "\n")
    with pytest.raises(DataError, match=r"d\.csv: the file has no rows"):
        prepare_dataset(_write_spec(tmp_path))


def test_unseen_scenario_at_inference(tmp_path: Path) -> None:
    _write_csv(tmp_path / "d.csv", 200)
    p = prepare_dataset(_write_spec(tmp_path))
    frame = _frame(5)
    frame["scen"] = ["s0", "s1", "mars", "s0", "s1"]
    with pytest.raises(DataError, match=r"scenario 'mars' in column 'scen' was never seen in training"):
        p.preprocessor.transform(frame, with_labels=False)


def test_unknown_spec_key(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(_spec_text().replace("split:", "splitt: {}\nsplit:"))
    with pytest.raises(SpecError, match=r"unknown key\(s\) \['splitt'\]"):
        load_spec(spec)
    spec.write_text(_spec_text().replace("min_count: 1", "min_cnt: 1"))
    with pytest.raises(SpecError, match=r"features\.sparse\[0\]: unknown key\(s\) \['min_cnt'\]"):
        load_spec(spec)


def test_task_referencing_missing_column(tmp_path: Path) -> None:
    _write_csv(tmp_path / "d.csv", 50)
    spec = tmp_path / "s.yaml"
    spec.write_text(_spec_text().replace("label: buy", "label: 'purchased == 1'"))
    with pytest.raises(DataError, match=r"missing column\(s\) \['purchased'\]"):
        prepare_dataset(spec, data_root=tmp_path)


def test_funnel_parent_must_exist(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(_spec_text().replace("inside: click", "inside: visit"))
    with pytest.raises(SpecError, match=r"task 'buy' is inside 'visit', which is not a task"):
        load_spec(spec)


def test_cli_prints_one_line_and_exits_nonzero(tmp_path: Path) -> None:
    f = _frame(50)
    f.loc[3, "click"] = 5
    f.to_csv(tmp_path / "d.csv", index=False)
    spec = _write_spec(tmp_path)
    cmd = [sys.executable, "-m", "msmtrec.cli", "data", "inspect", str(spec), "--data-root", str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "must be 0 or 1" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "msmtrec.cli", "--debug", *cmd[3:]], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" in r.stderr


@needs_data
def test_cli_inspect_hillstrom() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "msmtrec.cli", "data", "inspect", "hillstrom"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "21,307" in r.stdout and "21,387" in r.stdout and "21,306" in r.stdout
    assert "14.6781" in r.stdout


# ----------------------------------------------------------------------------------------- helpers


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    click = (rng.random(n) < 0.3).astype(int)
    return pd.DataFrame(
        {
            "c1": rng.choice(["a", "b", "c"], n),
            "x": rng.normal(size=n).round(3),
            "y": rng.random(n).round(3),
            "t": np.arange(n),
            "scen": rng.choice(["s0", "s1"], n),
            "click": click,
            "buy": click * (rng.random(n) < 0.2),
            "spend": rng.exponential(5, n).round(2),
        }
    )


def _write_csv(path: Path, n: int) -> None:
    _frame(n).to_csv(path, index=False)


def _spec_text(path: str = "d.csv", extra_dense: str = "", extra: str = "", split: str = "") -> str:
    return (
        "name: tiny\nfiles:\n  path: " + path + "\nscenario: {column: scen}\n"
        "tasks:\n  - {name: click, label: click, type: binary}\n"
        "  - {name: buy, label: buy, type: binary, inside: click}\n"
        "  - {name: spend, label: spend, type: regression, transform: log1p}\n"
        "features:\n  sparse:\n    - {name: c1, min_count: 1}\n  dense:\n    - {name: y}\n"
        + extra_dense
        + extra
        + (split or "split: {seed: 1}\n")
    )


def _write_spec(tmp_path: Path, name: str = "s.yaml", **kw: str) -> Path:
    text = _spec_text(**kw)
    if "extra_dense" not in kw:
        text = text.replace("    - {name: y}\n", "    - {name: y}\n    - {name: x}\n")
    spec = tmp_path / name
    spec.write_text(text.replace("path: ", f"path: {tmp_path}/", 1))
    return spec


def test_numeric_category_columns_become_text_without_spurious_decimals() -> None:
    """Ids read as floats (a column with gaps) and as ints must map to the same category text."""
    import numpy as np
    import pandas as pd

    from msmtrec.data.reader import to_text

    assert to_text(pd.Series([1.0, np.nan, 3.0])).tolist() == ["1", None, "3"]
    assert to_text(pd.Series([7, 8])).tolist() == ["7", "8"]
    assert to_text(pd.Series([1.5, np.nan])).tolist() == ["1.5", None]
