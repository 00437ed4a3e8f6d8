"""Issue 22's proof in small: on a simulated world drifting in one scenario only (``drift_scenarios``), a
model trained on week 1 and monitored on the last days is flagged in that scenario and not in a stationary one.

The simulator moves only affinities (and the mix), not the feature distributions of a scenario's rows, so the
signal is calibration (predicted / observed), not PSI; the test checks that too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from msmtrec import monitoring
from msmtrec.data.pipeline import read_and_filter
from msmtrec.data.spec import load_spec, spec_to_dict
from msmtrec.data.synth import GROUND_TRUTH, SynthConfig, synthesize
from msmtrec.runs import load_run
from msmtrec.training.run import train

DRIFTING, STATIONARY = 2, (0, 1)


def test_monitor_flags_the_drifting_scenario_only(tmp_path: Path) -> None:
    cfg = SynthConfig(rows=45_000, users=3_000, items=1_500, scenarios=3, imbalance=2.0, seed=1, drift=4.0,
                      drift_scenarios=[DRIFTING], conflict_scenarios=(), click_rate=(0.2, 0.3),
                      purchase_rate=(0.3, 0.5), row_group_rows=8192)
    synthesize(cfg, tmp_path / "world")
    truth = json.loads((tmp_path / "world" / GROUND_TRUTH).read_text())
    assert truth["drifting_scenarios"] == [truth["scenarios"][DRIFTING]["name"]]
    table = pq.read_table(sorted(str(p) for p in (tmp_path / "world").glob("part-*.parquet")))
    pq.write_table(table.filter(pc.less(table["day"], 7)), tmp_path / "week1.parquet")
    pq.write_table(table.filter(pc.greater_equal(table["day"], 21)), tmp_path / "late.parquet")

    raw = spec_to_dict(load_spec("synthetic"))
    raw["files"]["path"] = str(tmp_path / "week1.parquet")
    for f in raw["features"]["sparse"]:
        if isinstance(f, dict) and "hash_buckets" in f:
            f["hash_buckets"] = 4096
    import yaml

    spec = tmp_path / "week1.yaml"
    spec.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "run"
    train(run_dir, data=str(spec), model_name="star", seed=0,
          sets={"train.max_epochs": "3", "train.batch_size": "128", "train.progress": "false",
                "model.star_dims": "[32]", "model.aux_dims": "[8]", "model.tower_dims": "[16]", "model.embed_dim": "8"})

    run = load_run(run_dir)
    new_spec = monitoring.new_data_spec(run.preprocessor.spec, str(tmp_path / "late.parquet"), "day")
    frame = read_and_filter(new_spec).frame
    windows = monitoring.window_labels(frame, "week", "day")
    result = monitoring.monitor(run.model, run.preprocessor, frame, windows,
                                monitoring.reference_rows(run.preprocessor))
    names = run.model.schema.scenarios
    flagged = {a.split(" / ")[1] for a in result.alerts if a.startswith("calibration")}
    assert names[DRIFTING] in flagged, result.alerts
    assert not flagged & {names[s] for s in STATIONARY}, result.alerts
    # no feature drift was injected: PSI stays below the alert threshold in every scenario
    assert not [a for a in result.alerts if a.startswith("drift")], result.alerts


def test_relative_glob_of_new_rows_is_read_from_the_working_directory(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """``--data 'logs/*.parquet'`` means files under the current directory, as a single relative file does;
    it used to be resolved against the data root (and fail with "no file matches")."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.parquet").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    spec = monitoring.new_data_spec(load_spec("synthetic"), "logs/*.parquet", "day")
    assert spec.files.path == str(tmp_path.resolve() / "logs" / "*.parquet")
    assert monitoring.new_data_spec(load_spec("synthetic"), "logs/a.parquet").files.path == str(
        tmp_path.resolve() / "logs" / "a.parquet")
