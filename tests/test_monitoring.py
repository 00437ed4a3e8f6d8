"""``msmtrec monitor``: windows, PSI and calibration alerts fire where drift was injected and nowhere else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shipped_data import HAVE_DATA, ROOT

from msmtrec.cli import main
from msmtrec.monitoring import AlertRules, psi, window_labels

pytestmark = pytest.mark.skipif(not HAVE_DATA, reason="needs ../shared/data")


def test_psi_is_zero_for_equal_and_large_for_shifted_distributions() -> None:
    p = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(p, p) == pytest.approx(0.0)
    assert psi(p, np.array([0.7, 0.1, 0.1, 0.1])) > 0.2
    assert np.isfinite(psi(p, np.array([1.0, 0.0, 0.0, 0.0])))  # an empty bin stays finite


def test_windows_from_day_indices_unix_seconds_and_columns() -> None:
    day = 86400
    frame = pd.DataFrame({"t": [0, 1, 8, 15], "ts": [1.7e9, 1.7e9 + day, 1.7e9 + 7 * day, 1.7e9], "c": list("abab")})
    assert list(window_labels(frame, "day", "t")) == ["day 0", "day 1", "day 8", "day 15"]
    assert list(window_labels(frame, "week", "t")) == ["week 0", "week 0", "week 1", "week 2"]
    assert window_labels(frame, "day", "ts").nunique() == 3
    assert list(window_labels(frame, "c", None)) == list("abab")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from msmtrec.training.run import train

    out = tmp_path_factory.mktemp("mon") / "run"
    # STAR is scenario-aware (a model blind to the scenario is rightly flagged as miscalibrated per scenario)
    train(out, data="hillstrom", model_name="star", sets={"train.max_epochs": "2", "train.progress": "false"}, seed=0)
    return out


def _drifted_rows(out: Path) -> Path:
    """Hillstrom rows in four days; day 2–3 'Mens E-Mail' history × 8 (drift), day 3 'Womens' visits up."""
    frame = pd.read_csv(ROOT / "hillstrom" / "hillstrom.csv")
    rng = np.random.default_rng(0)
    frame["day"] = rng.integers(0, 4, len(frame))
    shifted = (frame["day"] >= 2) & (frame["segment"] == "Mens E-Mail")
    frame.loc[shifted, "history"] *= 8
    more_visits = (frame["day"] == 3) & (frame["segment"] == "Womens E-Mail") & (rng.random(len(frame)) < 0.4)
    frame.loc[more_visits, "visit"] = 1
    path = out / "new.csv"
    frame.to_csv(path, index=False)
    return path


def test_monitor_flags_injected_drift_only(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    new = _drifted_rows(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["monitor", str(trained_run), "--data", str(new), "--by", "day", "--time-column", "day",
              "--out", str(tmp_path / "mon"), "--min-positives", "300"])  # conversion cells are too small for a
    # two-epoch model's calibration to mean much
    assert e.value.code == 3
    assert "alert:" in capsys.readouterr().err
    cells = pd.read_csv(tmp_path / "mon" / "cells.csv")
    fields = pd.read_csv(tmp_path / "mon" / "fields.csv")
    alerts = (tmp_path / "mon" / "alerts.txt").read_text().splitlines()
    assert set(cells["window"]) == {"day 0", "day 1", "day 2", "day 3"}
    assert (tmp_path / "mon" / "plots" / "Mens_E-Mail.png").exists()
    drift = [a for a in alerts if a.startswith("drift")]
    calib = [a for a in alerts if a.startswith("calibration")]
    assert drift and all(("day 2" in a or "day 3" in a) and "history" in a for a in drift)
    assert any("Mens E-Mail" in a for a in drift) and not any("Womens" in a or "No E-Mail" in a for a in drift)
    assert calib and all("day 3" in a and "visit" in a for a in calib)
    assert any("Womens E-Mail" in a for a in calib)
    # the shifted field's PSI is large where it was shifted and small where it was not
    hist = fields[(fields["field"] == "history")].set_index(["window", "scenario"])["psi"]
    assert hist[("day 2", "Mens E-Mail")] > 0.2 and hist[("day 1", "Mens E-Mail")] < 0.05
    assert hist[("day 3", "No E-Mail")] < 0.05


def test_monitor_quiet_on_undrifted_rows_exits_zero(trained_run: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(ROOT / "hillstrom" / "hillstrom.csv")
    frame["batch"] = np.arange(len(frame)) % 2
    path = tmp_path / "same.csv"
    frame.to_csv(path, index=False)
    main(["monitor", str(trained_run), "--data", str(path), "--by", "batch", "--out", str(tmp_path / "m")])
    assert (tmp_path / "m" / "alerts.txt").read_text() == ""


def test_alert_rules_ignore_small_cells() -> None:
    from msmtrec.monitoring import alerts

    cells = pd.DataFrame([{"window": "w", "scenario": "s", "task": "t", "type": "binary", "probability": True,
                           "positives": 5,
                           "calibration": 3.0}])
    fields = pd.DataFrame([{"window": "w", "scenario": "s", "field": "f", "rows": 10, "psi": 2.0}])
    assert alerts(cells, fields, AlertRules()) == []
    assert len(alerts(cells, fields, AlertRules(min_positives=1, min_rows=1))) == 2
