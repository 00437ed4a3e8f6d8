"""Warm start (``train --init-from``): encoders extended not refitted, weights carried over, lineage recorded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from shipped_data import HAVE_DATA, ROOT

from msmtrec.data.extend import extend_preprocessor
from msmtrec.data.preprocessor import Preprocessor
from msmtrec.data.reader import SCENARIO_COL
from msmtrec.data.schema import SparseField, random_batch, synthetic_schema
from msmtrec.data.spec import load_spec
from msmtrec.errors import ConfigError
from msmtrec.models import build_model, registered_models
from msmtrec.training.warm_start import transfer_state


def _where(i: object) -> str:
    return f"row {i}"


def _frame(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    f = pd.DataFrame(rows, columns=["history_segment", "zip_code", "segment", "recency"])
    for c in ("mens", "womens", "newbie", "channel"):
        f[c] = "1"
    f["history"] = 10.0
    f[SCENARIO_COL] = f["segment"]
    return f


def test_vocabulary_is_extended_old_codes_unchanged_new_ones_appended() -> None:
    spec = load_spec("hillstrom")
    old = _frame([("a", "Urban", "Mens E-Mail", 1.0), ("b", "Rural", "Mens E-Mail", 2.0),
                  ("a", "Urban", "No E-Mail", 3.0)])
    base = Preprocessor(spec).fit(old, _where)
    new = _frame([("c", "Surburban", "Womens E-Mail", 9.0), ("c", "Urban", "Mens E-Mail", 8.0),
                  ("b", "Urban", "No E-Mail", 7.0)])
    pre, ext = extend_preprocessor(base, spec, new, _where)
    assert pre.sparse["history_segment"].vocabulary == [*base.sparse["history_segment"].vocabulary, "c"]
    assert pre.sparse["zip_code"].vocabulary == [*base.sparse["zip_code"].vocabulary, "Surburban"]
    assert ext.appended["history_segment"] == 1 and ext.new_scenarios == ["Womens E-Mail"]
    assert pre.scenarios == [*base.scenarios, "Womens E-Mail"]
    assert base.sparse["history_segment"].vocabulary == ["a", "b"]  # the parent's artifact is untouched
    # known values encode to the same codes as before; dense statistics kept by default
    a, _ = base.transform(old, with_labels=False)
    b, _ = pre.transform(old, with_labels=False)
    assert torch.equal(a["sparse"], b["sparse"]) and torch.equal(a["dense"], b["dense"])
    assert torch.equal(a["scenario"], b["scenario"])
    updated, _ = extend_preprocessor(base, spec, new, _where, dense="update")
    assert updated.dense["recency"].mean == pytest.approx(8.0)


def _grown(schema, extra_scenarios: int, extra_vocab: int):  # noqa: ANN001, ANN202
    sparse = tuple(SparseField(f.name, f.vocab_size + extra_vocab * (i % 2), f.source)
                   for i, f in enumerate(schema.sparse))
    scen = schema.scenarios + tuple(f"new{i}" for i in range(extra_scenarios))
    return dataclasses.replace(schema, sparse=sparse, scenarios=scen)


@pytest.mark.parametrize("name", registered_models())
def test_transferred_model_predicts_like_its_parent_on_known_rows(name: str) -> None:
    """Every model: after extension (more ids, one more scenario) known rows score exactly as before."""
    torch.manual_seed(0)
    parent_schema = synthetic_schema(scenarios=2, seq_len=3)
    parent = build_model(name, parent_schema).eval()
    with torch.no_grad():
        for p in parent.parameters():  # a trained-looking parent: no parameter at its initial value
            p.add_(0.1 * torch.randn_like(p))
    child = build_model(name, _grown(parent_schema, extra_scenarios=1, extra_vocab=4)).eval()
    report = transfer_state(parent, child)
    assert report.copied > 0
    batch = random_batch(parent_schema, 32, torch.Generator().manual_seed(3))
    batch.pop("labels")
    with torch.no_grad():
        want, got = parent(batch), child(batch)
    tol = 0.05 if child.scenarios_interact else 1e-5  # a new scenario joins attention over every scenario
    for task in want:
        torch.testing.assert_close(got[task], want[task], rtol=tol, atol=tol)
    # the new scenario scores finite values
    new_rows = dict(batch, scenario=torch.full_like(batch["scenario"], 2))
    with torch.no_grad():
        assert all(torch.isfinite(v).all() for v in child(new_rows).values())


def test_transfer_refuses_another_model_config() -> None:
    schema = synthetic_schema()
    a, b = build_model("mmoe", schema), build_model("mmoe", schema, {"num_experts": 7})
    with pytest.raises(ConfigError, match="warm start"):
        transfer_state(a, b)


@pytest.mark.skipif(not HAVE_DATA, reason="needs ../shared/data")
def test_cli_warm_start_adds_a_scenario_and_records_lineage(tmp_path: Path) -> None:
    from msmtrec.cli import main

    spec = yaml.safe_load((Path(load_spec("hillstrom").origin)).read_text())
    spec["files"]["path"] = str(ROOT.resolve() / spec["files"]["path"])
    early = dict(spec, name="hill_early", filter='segment != "No E-Mail"')
    (tmp_path / "early.yaml").write_text(yaml.safe_dump(early))
    (tmp_path / "late.yaml").write_text(yaml.safe_dump(dict(spec, name="hill_late")))
    args = ["--model", "star", "--epochs", "1", "--sample", "6000", "--set", "train.progress=false"]
    main(["train", "--data", str(tmp_path / "early.yaml"), "--out", str(tmp_path / "parent"), *args])
    main(["train", "--data", str(tmp_path / "late.yaml"), "--out", str(tmp_path / "child"),
          "--init-from", str(tmp_path / "parent"), *args[2:]])
    parent = Preprocessor.load(tmp_path / "parent")
    child = Preprocessor.load(tmp_path / "child")
    assert child.scenarios[: len(parent.scenarios)] == parent.scenarios and "No E-Mail" in child.scenarios[-1:]
    for name, enc in parent.sparse.items():
        if hasattr(enc, "vocabulary"):
            assert child.sparse[name].vocabulary[: len(enc.vocabulary)] == enc.vocabulary
    lineage = yaml.safe_load((tmp_path / "child" / "config.yaml").read_text())["lineage"]
    assert lineage["parent"] == str((tmp_path / "parent").resolve()) and lineage["generation"] == 1
    with pytest.raises(SystemExit):  # a warm start must name a spec over raw files
        main(["train", "--data", "planted", "--out", str(tmp_path / "x"), "--init-from", str(tmp_path / "parent")])
