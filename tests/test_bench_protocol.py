"""The benchmark protocol: early stopping ends runs, a monitor small cells cannot hijack, reports that keep
every model a results folder holds.

No training here: runs are faked (``runner.execute`` patched) so the tests check the bookkeeping, fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from msmtrec.benchmark import load_suite
from msmtrec.benchmark.report import load_results
from msmtrec.cli import main
from msmtrec.data.schema import Task, synthetic_schema
from msmtrec.training.config import TrainConfig
from msmtrec.training.metrics import Predictions, compute_metrics, monitor_value

# ------------------------------------------------------------------------------------------------ monitor


def test_weighted_auc_weights_cells_by_positives() -> None:
    """Two scenarios: a big one ranked well, a tiny one ranked perfectly backwards."""
    schema = synthetic_schema(tasks=(Task("click", "binary"),), scenarios=2)
    rng = np.random.default_rng(0)
    n_big, n_small = 2000, 20
    y_big = rng.integers(0, 2, n_big).astype(np.float32)
    x_big = y_big + rng.normal(scale=0.5, size=n_big)
    y_small = np.array([0, 1] * (n_small // 2), dtype=np.float32)
    x_small = -y_small.astype(np.float64)  # AUC 0
    preds = Predictions(
        outputs={"click": np.concatenate([x_big, x_small]).astype(np.float32)},
        labels=np.concatenate([y_big, y_small])[:, None],
        scenario=np.concatenate([np.zeros(n_big, int), np.ones(n_small, int)]),
    )
    m = compute_metrics(schema, preds)
    big, small = m["by_scenario"]["s0"]["click"], m["by_scenario"]["s1"]["click"]
    assert small["auc"] == 0.0
    expected = (big["auc"] * big["positives"] + 0.0 * small["positives"]) / (big["positives"] + small["positives"])
    assert m["weighted_auc"] == pytest.approx(expected)
    assert m["mean_auc"] == pytest.approx((big["auc"] + 0.0) / 2)
    assert m["weighted_auc"] > m["mean_auc"] + 0.4  # the 10-positive cell no longer drags the score by half
    assert monitor_value(m, "weighted_auc") == pytest.approx(expected)
    assert monitor_value(m, "mean_auc") == pytest.approx(m["mean_auc"])  # the unweighted mean stays available
    TrainConfig(monitor="weighted_auc")


def test_shipped_suites_let_early_stopping_end_runs() -> None:
    for name in ("hillstrom", "census_kdd", "synthetic"):
        suite = load_suite(name)
        assert suite.train["max_epochs"] >= 50 and suite.train["patience"] >= 3
        assert suite.train["monitor"] == "weighted_auc"


def test_suite_without_monitor_defaults_to_weighted_auc(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("datasets: [hillstrom]\nmodels: [mmoe]\n")
    assert load_suite(path).train["monitor"] == "weighted_auc"
    path.write_text("datasets: [hillstrom]\ntrain: {monitor: mean_auc}\nmodels: [mmoe]\n")
    assert load_suite(path).train["monitor"] == "mean_auc"


# ------------------------------------------------------------------------------------------- cap counting


def test_capped_runs_tell_the_cap_from_early_stopping() -> None:
    import pandas as pd

    from msmtrec.benchmark.report import capped_runs

    rows = []
    # (model, seed, epochs, best_epoch): cap 10, patience 3
    for model, seed, epochs, best in [("a", 0, 10, 9), ("a", 1, 6, 2), ("b", 0, 10, 6), ("b", 1, 10, 8)]:
        rows += [("d", model, "model", model, seed, "all", "all", "epochs", epochs),
                 ("d", model, "model", model, seed, "all", "all", "best_epoch", best)]
    df = pd.DataFrame(rows, columns=["dataset", "model", "kind", "base_model", "seed", "scenario", "task", "metric",
                                     "value"])
    got = capped_runs(df, {"max_epochs": 10, "patience": 3})
    # a/0 improved in its last epoch (capped); a/1 stopped early; b/0 stopped by patience exactly at the cap
    assert got.to_dict() == {"a": 1, "b": 1}


# --------------------------------------------------------------------------------- subsets and report-only


def _fake_execute(spec):  # noqa: ANN001, ANN202
    from msmtrec.benchmark import runner

    base = (spec.dataset.label, spec.entry.name, spec.entry.kind, spec.entry.model, spec.seed)
    auc = {"mmoe": 0.71, "ple": 0.72, "single_task": 0.70}[spec.entry.name]
    rows = [(*base, "s0", "click", "auc", auc), (*base, "s0", "click", "positives", 50.0)]
    rows += [(*base, "all", "all", m, 1.0) for m in runner.RUN_METRICS]
    return runner.RunOutput(spec, rows)


def _summary_models(out: Path) -> set[str]:
    text = (out / "summary.md").read_text()
    table = text.split("### AUC\n", 1)[1].split("\n\n")[0]  # the AUC table: one row per model
    return {line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")} - {"model"}


def test_models_subset_keeps_every_model_in_the_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from msmtrec.benchmark import runner

    monkeypatch.setattr(runner, "execute", _fake_execute)
    suite = tmp_path / "suite.yaml"
    suite.write_text("datasets: [hillstrom]\nmodels: [single_task, mmoe, ple]\n")
    out = tmp_path / "out"
    base = ["benchmark", str(suite), "--seeds", "1", "--out", str(out), "--no-progress"]
    main([*base, "--models", "single_task,mmoe"])
    assert _summary_models(out) == {"single_task", "mmoe"}
    main([*base, "--models", "ple"])  # a later subset must add ple, not replace the others
    assert _summary_models(out) == {"single_task", "mmoe", "ple"}
    machine = json.loads((out / "machine.json").read_text())
    assert len(machine["commands"]) == 2 and "--models ple" in machine["commands"][1]
    assert "then" in (out / "summary.md").read_text()  # both commands named in the header


def test_pieces_may_change_entries_that_have_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The tuned mode fills a folder model by model: an entry recorded earlier but never run may change;
    one with finished runs may not."""
    from msmtrec.benchmark import runner

    monkeypatch.setattr(runner, "execute", _fake_execute)
    out = tmp_path / "out"
    body = "datasets: [hillstrom]\nmodels: [single_task, {{name: mmoe, config: {{num_experts: {m}}}}}, " \
           "{{name: ple, config: {{shared_experts: {p}}}}}]\n"
    suite = tmp_path / "suite.yaml"
    base = ["benchmark", str(suite), "--seeds", "1", "--out", str(out), "--no-progress"]
    suite.write_text(body.format(m=2, p=1))
    main([*base, "--models", "mmoe"])
    suite.write_text(body.format(m=2, p=3))  # ple never ran: its config may change
    main([*base, "--models", "ple"])
    recorded = json.loads((out / "suite.json").read_text())
    assert recorded["entries"]["ple"]["config"]["shared_experts"] == 3
    assert "single_task" not in recorded["entries"] and recorded["order"] == ["single_task", "mmoe", "ple"]
    suite.write_text(body.format(m=4, p=3))  # mmoe has results: refused
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--models", "mmoe"])
    assert exit_info.value.code == 2 and "'mmoe' changed" in capsys.readouterr().err


def test_report_only_rebuilds_from_every_result_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder whose suite.json lost entries (written by an older msmtrec) still reports every model."""
    from msmtrec.benchmark import runner

    monkeypatch.setattr(runner, "execute", _fake_execute)
    suite = tmp_path / "suite.yaml"
    suite.write_text("datasets: [hillstrom]\nmodels: [single_task, mmoe, ple]\n")
    out = tmp_path / "out"
    main(["benchmark", str(suite), "--seeds", "1", "--out", str(out), "--no-progress"])
    record = json.loads((out / "suite.json").read_text())
    record["entries"] = {"ple": record["entries"]["ple"]}  # what the old subset run left behind
    del record["order"]
    (out / "suite.json").write_text(json.dumps(record))
    main(["benchmark", str(suite), "--report-only", "--out", str(out)])
    assert _summary_models(out) == {"single_task", "mmoe", "ple"}
    assert load_results(out).models("hillstrom", ("model",)) == ["ple", "single_task", "mmoe"]


def test_models_all_takes_every_registered_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from msmtrec.models import base

    path = tmp_path / "s.yaml"
    path.write_text("datasets: [hillstrom]\nbudget: {embed_dim: 8}\nmodels: all\n")
    suite = load_suite(path)
    assert [e.name for e in suite.entries] == base.registered_models()
    assert all(e.config["embed_dim"] == 8 for e in suite.entries)
    # explicit entries keep their config; a model registered later joins without editing the suite
    path.write_text("datasets: [hillstrom]\nmodels: [{name: mmoe, config: {num_experts: 2}}, all]\n")

    @base.register("bench_test_model")
    class Extra(base.MultiTaskModel):  # noqa: F841 - registered by the decorator
        pass

    try:
        suite = load_suite(path)
        assert suite.entry("mmoe").config["num_experts"] == 2
        assert "bench_test_model" in {e.name for e in suite.entries}
        assert len([e for e in suite.entries if e.model == "mmoe"]) == 1
    finally:
        base._REGISTRY.pop("bench_test_model")


# ------------------------------------------------------------------------------------------------ new suites


def test_new_suites_load() -> None:
    from msmtrec.benchmark import shipped_suites

    assert {"census_kdd_worker", "synthetic_drift"} <= set(shipped_suites())
    worker = load_suite("census_kdd_worker")
    ds = worker.datasets[0]
    assert ds.label == "census_kdd_worker" and ds.overrides["scenario.column"] == "class_of_worker"
    assert "sex" in ds.overrides["features.sparse"] and "class_of_worker" not in ds.overrides["features.sparse"]
    drift = load_suite("synthetic_drift").datasets[0]
    assert drift.overrides["split.method"] == "time" and drift.label == "synthetic_drift"


@pytest.mark.slow
def test_drift_suite_quick_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated drifting logs, time split, the suite's quick models; the smallest scenarios get their table."""
    from msmtrec.data.synth import SynthConfig, synthesize

    synthesize(SynthConfig(rows=20_000, scenarios=6, imbalance=10.0, users=3000, items=1000, drift=2.0,
                           click_rate=(0.15, 0.35), purchase_rate=(0.3, 0.5), row_group_rows=2048),
               tmp_path / "root" / "synthetic_drift")
    monkeypatch.setenv("MSMTREC_DATA", str(tmp_path / "root"))
    out = tmp_path / "out"
    main(["benchmark", "synthetic_drift", "--quick", "--out", str(out), "--no-progress"])
    summary = (out / "summary.md").read_text()
    assert "## synthetic_drift" in summary and "### Smallest scenarios" in summary
