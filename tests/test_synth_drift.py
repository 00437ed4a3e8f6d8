"""The simulator's drift option: the scenario mix and the affinities change over time; drift 0 is unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from msmtrec.data.synth import GROUND_TRUTH, SynthConfig, drifted_shares, scenario_shares, synthesize
from msmtrec.errors import DataError

# sha256 of the scenario, click and purchase columns that main (before drift existed) wrote for _config()
STATIONARY_DIGEST = "bcbd62e4092f91e12037ff605c6092447fba84ab1a43aaf63dd0ba75746c2d53"


def _config(**kw: object) -> SynthConfig:
    base = {"rows": 40_000, "users": 5_000, "items": 2_000, "scenarios": 4, "imbalance": 10.0,
            "row_group_rows": 4096, "rows_per_file": 40_960, "seed": 3}
    base.update(kw)
    return SynthConfig(**base)  # type: ignore[arg-type]


def _table(out: Path):  # noqa: ANN202
    return pq.read_table(sorted(str(p) for p in out.glob("part-*.parquet"))).to_pandas()


def test_drifted_shares_move_mass_from_large_to_small() -> None:
    p = scenario_shares(4, 10.0)
    early, late = drifted_shares(p, 2.0, 0.0), drifted_shares(p, 2.0, 1.0)
    assert np.allclose(drifted_shares(p, 2.0, 0.5), p) and np.allclose(drifted_shares(p, 0.0, 0.9), p)
    assert late[0] < p[0] < early[0] and late[-1] > p[-1] > early[-1]
    with pytest.raises(DataError, match="drift"):
        _config(drift=-1.0).check()


def test_drift_changes_mix_and_click_behaviour_over_time(tmp_path: Path) -> None:
    synthesize(_config(drift=3.0), tmp_path / "d")
    synthesize(_config(), tmp_path / "s")
    drift, still = _table(tmp_path / "d"), _table(tmp_path / "s")
    assert drift["ts"].is_monotonic_increasing or (np.diff(drift["ts"].to_numpy()) > -60).all()
    half = len(drift) // 2
    share = lambda f, s: (f["scenario"] == s).mean()  # noqa: E731
    # the smallest scenario grows from the early half to the late half; the largest shrinks
    assert share(drift.iloc[half:], 3) > 2 * share(drift.iloc[:half], 3)
    assert share(drift.iloc[half:], 0) < share(drift.iloc[:half], 0)
    # without drift both halves have the same mix (within sampling noise)
    assert abs(share(still.iloc[half:], 0) - share(still.iloc[:half], 0)) < 0.02
    truth = json.loads((tmp_path / "d" / GROUND_TRUTH).read_text())
    assert truth["config"]["drift"] == 3.0 and all(len(s["drift_direction"]) == 8 for s in truth["scenarios"])
    assert json.loads((tmp_path / "s" / GROUND_TRUTH).read_text())["scenarios"][0]["drift_direction"] == []


def test_drift_zero_writes_what_the_stationary_simulator_wrote(tmp_path: Path) -> None:
    """The drift code must not touch the stationary path: same bytes of labels and scenarios as before it."""
    synthesize(_config(), tmp_path)
    t = _table(tmp_path)
    digest = hashlib.sha256(
        t[["scenario", "click", "purchase"]].to_numpy().astype(np.int64).tobytes()
    ).hexdigest()
    assert digest == STATIONARY_DIGEST


# sha256 of the scenario, click and purchase columns that the bench branch (before drift_scenarios existed)
# wrote for _config(drift=3.0): drift_scenarios=None must keep drifting every scenario exactly as before
ALL_DRIFT_DIGEST = "b120fefa93e64e81e115ecb1509751e16f4e97b76a9f5d325b4583c4951c8e0e"


def _digest(t) -> str:  # noqa: ANN001
    return hashlib.sha256(t[["scenario", "click", "purchase"]].to_numpy().astype(np.int64).tobytes()).hexdigest()


def test_drift_scenarios_none_drifts_every_scenario_as_before(tmp_path: Path) -> None:
    synthesize(_config(drift=3.0), tmp_path)
    t = _table(tmp_path)
    assert _digest(t) == ALL_DRIFT_DIGEST
    assert (t["day"] == (t["ts"] - 1_700_000_000) // 86400).all() and t["day"].min() == 0 and t["day"].max() == 29
    truth = json.loads((tmp_path / GROUND_TRUTH).read_text())
    assert truth["drifting_scenarios"] == [s["name"] for s in truth["scenarios"]]


def test_drift_scenarios_confine_the_drift(tmp_path: Path) -> None:
    synthesize(_config(drift=3.0, drift_scenarios=[2]), tmp_path)
    truth = json.loads((tmp_path / GROUND_TRUTH).read_text())
    assert truth["drifting_scenarios"] == ["product_detail"]
    assert [s["drifts"] for s in truth["scenarios"]] == [False, False, True, False]
    assert [any(s["drift_direction"]) for s in truth["scenarios"]] == [False, False, True, False]
    assert truth["config"]["drift_scenarios"] == [2]
    with pytest.raises(DataError, match="drift scenario"):
        _config(drift=1.0, drift_scenarios=[4]).check()
