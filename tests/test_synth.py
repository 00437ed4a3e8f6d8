"""The simulator: seeded, imbalanced, funnel-consistent, and readable through the shipped spec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from msmtrec.data.pipeline import prepare_dataset
from msmtrec.data.synth import GROUND_TRUTH, SynthConfig, exact_counts, scenario_shares, synthesize
from msmtrec.errors import DataError

ROWS = 20_000


def _config(**kw: object) -> SynthConfig:
    base = {"rows": ROWS, "users": 20_000, "items": 5_000, "row_group_rows": 4096, "rows_per_file": 8192}
    base.update(kw)
    return SynthConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthesize(_config(seed=7), out)
    return out


def _read(out: Path):  # noqa: ANN202 - a pyarrow Table
    return pq.read_table(sorted(str(p) for p in out.glob("part-*.parquet")))


def test_layout_files_and_row_groups(synth_dir: Path) -> None:
    files = sorted(synth_dir.glob("part-*.parquet"))
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    sizes = [pq.ParquetFile(f).metadata.row_group(0).num_rows for f in files]
    assert sizes[:2] == [4096, 4096]
    t = _read(synth_dir)
    assert t.num_rows == ROWS
    for col in ("user_id", "item_id", "scenario", "click", "purchase", "dwell_time", "item_price", "user_age"):
        assert col in t.column_names
    ids = t.column("impression_id").to_numpy()
    assert np.array_equal(ids, np.arange(ROWS))


def test_deterministic_given_seed(synth_dir: Path, tmp_path: Path) -> None:
    synthesize(_config(seed=7), tmp_path / "again")
    assert _read(synth_dir).equals(_read(tmp_path / "again"))
    synthesize(_config(seed=8), tmp_path / "other")
    assert not _read(synth_dir).column("click").equals(_read(tmp_path / "other").column("click"))


def test_scenario_imbalance_at_default_settings(synth_dir: Path) -> None:
    counts = np.bincount(_read(synth_dir).column("scenario").to_numpy(), minlength=8)
    assert len(counts) == 8 and counts.min() >= 1
    assert counts.max() / counts.min() >= 100
    truth = json.loads((synth_dir / GROUND_TRUTH).read_text())
    assert [s["realised"]["rows"] for s in truth["scenarios"]] == counts.tolist()
    assert [s["rows"] for s in truth["scenarios"]] == counts.tolist()  # planned totals are exact


def test_funnel_and_rates(synth_dir: Path) -> None:
    t = _read(synth_dir)
    click = t.column("click").to_numpy()
    purchase = t.column("purchase").to_numpy()
    assert set(np.unique(click)) <= {0, 1} and set(np.unique(purchase)) <= {0, 1}
    assert not ((purchase == 1) & (click == 0)).any()
    assert 0.005 < click.mean() < 0.15
    assert 0 < purchase.sum() < click.sum()
    dwell = t.column("dwell_time").to_numpy()
    assert (dwell > 0).all() and dwell[click == 1].mean() > dwell[click == 0].mean()


def test_ground_truth_names_the_conflict(synth_dir: Path) -> None:
    truth = json.loads((synth_dir / GROUND_TRUTH).read_text())
    assert truth["conflict_scenarios"] == ["search"]
    scen = {s["name"]: s for s in truth["scenarios"]}
    assert scen["search"]["conflict"] and scen["search"]["click_purchase_affinity_corr"] < -0.2
    assert scen["home_feed"]["click_purchase_affinity_corr"] > 0.99
    assert scen["search"]["purchase_weights"][0] == -scen["search"]["click_weights"][0]
    # the calibrated bias hits the target base rate in the big scenario
    home = scen["home_feed"]
    assert abs(home["realised"]["click_rate"] - home["target_click_rate"]) < 0.4 * home["target_click_rate"]


def test_shipped_spec_reads_the_output(synth_dir: Path) -> None:
    p = prepare_dataset("synthetic", overrides={"files.path": f"{synth_dir}/*.parquet"})
    assert sum(p.report["rows"].values()) == ROWS
    assert p.report["funnel_violations"] == {"purchase": 0}
    schema = p.schema
    assert schema.task_names == ["click", "purchase", "dwell"]
    assert schema.scenarios[:2] == ("home_feed", "search") and len(schema.scenarios) == 8
    by_name = {f.name: f for f in schema.sparse}
    assert by_name["user_id"].source == "hashed" and by_name["user_id"].vocab_size == 2**18 + 1
    assert by_name["item_brand"].source == "categorical"


def test_cli_synth(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "msmtrec.cli", "data", "synth", "--rows", "3000", "--users", "500"]
    cmd += ["--items", "200", "--scenarios", "3", "--imbalance", "100", "--out", str(out), "--seed", "3"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "3,000 rows" in r.stdout and (out / GROUND_TRUTH).exists()
    r = subprocess.run(cmd, capture_output=True, text=True)  # refuses to mix with existing shards
    assert r.returncode == 2 and "overwrite" in r.stderr


def test_shares_and_counts() -> None:
    p = scenario_shares(8, 1000.0)
    assert abs(p.sum() - 1) < 1e-12 and abs(p[0] / p[-1] - 1000) < 1e-6
    c = exact_counts(1000, p)
    assert c.sum() == 1000 and c.min() >= 1
    with pytest.raises(DataError, match="conflict"):
        _config(conflict_scenarios=(9,)).check()
