"""``msmtrec data sample``: raw rows in the spec's input layout, from the training split unless asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from msmtrec.cli.data import app as data_app
from msmtrec.data.pipeline import prepare_dataset
from msmtrec.data.sample import sample_rows
from msmtrec.errors import ConfigError

SPEC = """
name: tiny
files: {{path: {path}}}
scenario: {{column: page}}
tasks:
  - {{name: click, label: click, type: binary}}
features:
  sparse: [cat, rid]
  dense: [price]
split: {{method: random, fractions: [0.6, 0.2, 0.2], seed: 3}}
"""


@pytest.fixture()
def spec(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 400
    pd.DataFrame({
        "rid": [f"r{i}" for i in range(n)],
        "page": rng.choice(["home", "search"], n),
        "cat": rng.choice(list("abcde"), n),
        "price": rng.uniform(1, 50, n).round(2),
        "click": rng.integers(0, 2, n),
        "unused": 1,
    }).to_csv(tmp_path / "rows.csv", index=False)
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC.format(path=tmp_path / "rows.csv"))
    return path


def test_sample_comes_from_the_training_split_only(spec: Path) -> None:
    every_train = sample_rows(spec, 10_000)
    test = sample_rows(spec, 10_000, split="test")
    prepared = prepare_dataset(spec)
    assert len(every_train) == len(prepared.splits["train"]) and len(test) == len(prepared.splits["test"])
    assert not set(every_train["rid"]) & set(test["rid"])
    some = sample_rows(spec, 50, seed=1)
    assert len(some) == 50 and set(some["rid"]) <= set(every_train["rid"])
    assert list(some["rid"]) != list(sample_rows(spec, 50, seed=2)["rid"])
    # the spec's input layout: its columns under their source names, nothing internal, nothing unused
    assert set(some.columns) == {"rid", "page", "cat", "price", "click"}
    assert "click" not in sample_rows(spec, 5, labels=False).columns


def test_cli_writes_a_file_predict_can_read(spec: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(data_app, ["sample", str(spec), "--rows", "30", "--out", str(tmp_path / "s.csv")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "wrote 30 train rows" in res.output
    frame = pd.read_csv(tmp_path / "s.csv")
    assert len(frame) == 30 and frame["rid"].str.startswith("r").all()
    res = CliRunner().invoke(data_app, ["sample", str(spec), "--rows", "3", "--out", str(tmp_path / "s.parquet"),
                                        "--no-labels"])
    assert res.exit_code == 0 and len(pd.read_parquet(tmp_path / "s.parquet")) == 3


def test_bad_arguments_are_user_errors(spec: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--split"):
        sample_rows(spec, 10, split="holdout")
    with pytest.raises(ConfigError, match="--rows"):
        sample_rows(spec, 0)
    from msmtrec.data.sample import write_rows

    with pytest.raises(ConfigError, match=r"\.csv"):
        write_rows(pd.DataFrame({"a": [1]}), tmp_path / "x.json")
