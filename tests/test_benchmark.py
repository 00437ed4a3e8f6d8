"""Benchmark harness: suites validate, reports compute the right things, and the quick hillstrom run works.

The end-to-end test runs ``msmtrec benchmark hillstrom --quick`` exactly as CI would and checks every output
file; the report tests use a small hand-made ``results.csv`` whose answers are known, so the bold cells,
negative-transfer counts and seesaw detection are checked without training anything.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import torch

from msmtrec.benchmark import RESULT_COLUMNS, load_suite, shipped_suites
from msmtrec.benchmark.peer import binary_view, build_peer, rechub_available
from msmtrec.benchmark.report import ablation_md, load_results, metric_table, seesaw_md, summary_md
from msmtrec.benchmark.runner import check_resume, suite_record
from msmtrec.benchmark.writer import write_reports
from msmtrec.cli import main
from msmtrec.data.schema import Task, random_batch, synthetic_schema
from msmtrec.data.spec import data_root
from msmtrec.errors import ConfigError
from msmtrec.models.base import registered_models

HAVE_DATA = (data_root() / "hillstrom" / "hillstrom.csv").exists()
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="shared hillstrom data not found")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------ suites


def test_shipped_suites_load_with_all_models_and_ablations() -> None:
    assert {"hillstrom", "census_kdd", "synthetic"} <= set(shipped_suites())
    for name in ("hillstrom", "census_kdd"):
        suite = load_suite(name)
        ours = {e.model for e in suite.entries if e.kind == "model"}
        assert ours == set(registered_models())  # `- all` brings in every registered model
        assert {"hef", "single_task", "shared_bottom", "mmoe", "ple", "star", "esmm", "m3oe", "pepnet",
                "hinet"} <= ours
        switches = {k for e in suite.entries if e.kind == "ablation" for k in e.config if k not in suite.budget}
        assert switches == {"attention", "star", "levels", "scenario_experts", "task_experts", "mixing", "base_skip",
                            "embedding_gate"}
        # the budget is forced on every entry, so no model gets a different embedding size
        assert {e.config["embed_dim"] for e in suite.entries} == {suite.budget["embed_dim"]}
        peers = [e for e in suite.entries if e.kind == "peer"]
        assert peers and all(e.config == _resolved(suite, e.like) for e in peers)
    synthetic = load_suite("synthetic")
    assert synthetic.datasets[0].name == "synthetic" and synthetic.datasets[0].overrides


def _resolved(suite, like: str) -> dict:  # noqa: ANN001
    from msmtrec.benchmark.suite import config_dict_of

    return config_dict_of(suite.entry(like))


def _write_suite(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("datasets: [hillstrom]\nbudget: {embed_dim: 8}\nmodels: [{name: mmoe, config: {embed_dim: 4}}]\n",
         "part of the suite budget"),
        ("datasets: [hillstrom]\nmodels: [{name: nope}]\n", "unknown model"),
        ("datasets: [hillstrom]\nmodels: [{name: mmoe, config: {num_expert: 3}}]\n", "unknown key"),
        ("datasets: [hillstrom]\nmodels: [mmoe]\nablations: [{name: x, model: hef, config: {star: false}}]\n",
         "switch"),
        ("datasets: [hillstrom]\nmodels: [hef]\npeers: [{name: r, like: hef}]\n", "no counterpart"),
        ("datasets: [hillstrom]\nmodels: [mmoe]\nquick: {models: [ple]}\n", "unknown variant"),
        ("datasets: [hillstrom]\ntrain: {max_epoch: 3}\nmodels: [mmoe]\n", "unknown key"),
        ("models: [mmoe]\n", "at least one dataset"),
        ("datasets: [hillstrom]\nmodels: [mmoe, mmoe]\n", "unique"),
        ("datasets: [hillstrom]\nmodels: [mmoe]\nablations: [mmoe]\n", "declares no ablations"),
        ("datasets: [hillstrom]\nmodels: [mmoe]\nablations: [nope]\n", "unknown model"),
    ],
)
def test_bad_suites_fail_clearly(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_suite(_write_suite(tmp_path, body))


def test_a_model_name_under_ablations_brings_the_rows_that_model_declares(tmp_path: Path) -> None:
    from msmtrec.models.base import model_class

    suite = load_suite(_write_suite(tmp_path, "datasets: [hillstrom]\nbudget: {embed_dim: 8}\nmodels: [hef]\n"
                                              "ablations: [hef]\n"))
    rows = [e for e in suite.entries if e.kind == "ablation"]
    declared = model_class("hef").ablations()
    assert [e.name for e in rows] == [a.name for a in declared]
    assert all(e.model == "hef" and e.switch and e.config == {**a.config, "embed_dim": 8}
               for e, a in zip(rows, declared, strict=True))


@pytest.mark.parametrize("name", registered_models())
def test_every_declared_ablation_builds_and_changes_the_default(name: str) -> None:
    """Registry-driven: a model's declared ablation rows must build, and each must differ from the default it
    ablates (a row equal to the default would measure nothing)."""
    import dataclasses

    from msmtrec.models.base import build_model, model_class

    schema = synthetic_schema()
    default = dataclasses.asdict(model_class(name).Config())
    for row in model_class(name).ablations():
        model = build_model(name, schema, dict(row.config))
        assert any(default[k] != v for k, v in row.config.items()), row.name
        assert sum(p.numel() for p in model.parameters()) > 0


def test_unknown_suite_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match="hillstrom"):
        load_suite("no_such_suite")


def test_resume_refuses_a_different_budget(tmp_path: Path) -> None:
    suite = load_suite("hillstrom")
    (tmp_path / "suite.json").write_text(json.dumps(suite_record(suite.quick_version()), default=str))
    with pytest.raises(ConfigError, match="different 'train'"):
        check_resume(tmp_path, suite_record(suite))
    check_resume(tmp_path, suite_record(suite.quick_version()))  # same suite: fine


# ------------------------------------------------------------------------------------------------ reports


def _fake_results(tmp_path: Path) -> Path:
    """Two scenarios × (click AUC, spend RMSE), three models, two seeds, with known transfers.

    mmoe beats single_task on click in s0 but loses in s1, and loses on spend in s0 (a seesaw in s0);
    hef beats both everywhere. A partial run (hef seed 2, no marker row) must be ignored.
    """
    auc = {"single_task": {"s0": 0.70, "s1": 0.70}, "mmoe": {"s0": 0.75, "s1": 0.65}, "hef": {"s0": 0.80, "s1": 0.78}}
    rmse = {"single_task": {"s0": 1.0, "s1": 1.0}, "mmoe": {"s0": 1.2, "s1": 0.9}, "hef": {"s0": 0.8, "s1": 0.8}}
    rows = []
    for model in auc:
        for seed in (0, 1):
            jitter = 0.01 * seed
            for s in ("s0", "s1"):
                rows.append(["d", model, "model", model, seed, s, "click", "auc", auc[model][s] + jitter])
                rows.append(["d", model, "model", model, seed, s, "click", "logloss", 0.5 - auc[model][s] / 10])
                rows.append(["d", model, "model", model, seed, s, "spend", "rmse", rmse[model][s] + jitter])
            rows.append(["d", model, "model", model, seed, "all", "click", "auc", auc[model]["s0"]])
            for metric, value in (("params", 100), ("samples_per_second", 1000.0), ("train_seconds", 1.0),
                                  ("inference_rows_per_second", 5000.0), ("epochs", 2), ("best_epoch", 1)):
                rows.append(["d", model, "model", model, seed, "all", "all", metric, value])
    rows.append(["d", "hef", "model", "hef", 2, "s0", "click", "auc", 0.1])  # killed run: no marker row
    with (tmp_path / "results.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(RESULT_COLUMNS)
        w.writerows(rows)
    return tmp_path


def test_reports_bold_best_and_drop_partial_runs(tmp_path: Path) -> None:
    res = load_results(_fake_results(tmp_path))
    assert res.seeds() == [0, 1]
    df = res.of("d")
    table = metric_table(df, ["single_task", "mmoe", "hef"], "auc")
    hef_row = next(line for line in table.splitlines() if line.startswith("| hef"))
    assert hef_row.count("**") == 2 * 4  # s0, s1, all, avg: every column's best
    rmse = metric_table(df, ["single_task", "mmoe", "hef"], "rmse")
    assert "**0.8050 ± 0.0071**" in rmse  # lowest RMSE is the bold one
    assert "**" in summary_md(res)


def test_seesaw_counts_negative_transfer(tmp_path: Path) -> None:
    text = seesaw_md(load_results(_fake_results(tmp_path)))
    mmoe = next(line for line in text.splitlines() if line.startswith("| mmoe"))
    hef = next(line for line in text.splitlines() if line.startswith("| hef"))
    assert "2/4" in mmoe  # click in s1 and spend in s0 got worse
    assert "s0 (click↑ spend↓)" in mmoe and "s1 (spend↑ click↓)" in mmoe
    assert "0/4" in hef and hef.rstrip(" |").endswith("no")


def test_ablation_table_reads_the_validation_delta_next_to_the_test_delta(tmp_path: Path) -> None:
    """HEF's defaults are judged on validation (issue 14): each ablation row shows its paired validation Δ
    from the runs' ``valid_monitor`` (n/a where the runs predate it), next to the test Δ."""
    rows = []
    for model, kind, valid, test in (("hef", "model", 0.70, 0.80), ("hef-no-x", "ablation", 0.68, 0.81),
                                     ("hef-no-y", "ablation", None, 0.79)):
        for seed in (0, 1):
            rows.append(["d", model, kind, "hef", seed, "s0", "click", "auc", test + 0.01 * seed])
            rows.append(["d", model, kind, "hef", seed, "all", "click", "auc", test])
            for metric, value in (("params", 100), ("epochs", 2), ("best_epoch", 1)):
                rows.append(["d", model, kind, "hef", seed, "all", "all", metric, value])
            if valid is not None:
                rows.append(["d", model, kind, "hef", seed, "all", "all", "valid_monitor", valid + 0.002 * seed])
    with (tmp_path / "results.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(RESULT_COLUMNS)
        w.writerows(rows)
    text = ablation_md(load_results(tmp_path))
    no_x = next(line for line in text.splitlines() if line.startswith("| hef-no-x"))
    no_y = next(line for line in text.splitlines() if line.startswith("| hef-no-y"))
    assert "Δ valid vs hef" in text
    assert "+0.0100 ± 0.0000" in no_x and "-0.0200 ± 0.0000" in no_x  # test Δ, then validation Δ
    assert "-0.0100 ± 0.0000" in no_y and "n/a" in no_y


def test_explain_plots_draw_the_parts_the_runs_have_and_drop_stale_ones(tmp_path: Path) -> None:
    """A folder re-run after a HEF part was switched off (the learned mixing, attention) must not keep showing
    that part's old figure next to the new results."""
    from msmtrec.benchmark.plots import explain_plots

    (tmp_path / "explain").mkdir()
    gates = [[0.5, 0.5], [0.9, 0.1]]
    (tmp_path / "explain" / "ds__hef__seed0.json").write_text(json.dumps(
        {"scenarios": ["a", "b"], "fields": ["f"], "weights": {"gates/level0/task:click": gates}, "attention": None}))
    stale = [tmp_path / "hef_mixing_ds.png", tmp_path / "hef_attention_ds.png"]
    for path in stale:
        path.write_bytes(PNG_MAGIC)
    (tmp_path / "hef_mixing_other.png").write_bytes(PNG_MAGIC)  # another dataset's figure is left alone
    written = explain_plots("ds", tmp_path)
    assert written == [tmp_path / "hef_gates_ds.png"] and written[0].read_bytes().startswith(PNG_MAGIC)
    assert not any(path.exists() for path in stale)
    assert (tmp_path / "hef_mixing_other.png").exists()


def test_write_reports_from_results_only(tmp_path: Path) -> None:
    written = write_reports(_fake_results(tmp_path))
    names = {p.name for p in written}
    figures = {"auc_d.png", "transfer_d.png", "avg_auc_d.png"}
    assert {"summary.md", "seesaw.md", "ablation.md", "cost.md", *figures} <= names


def test_the_ranking_figure_orders_models_and_peers_by_mean_and_leaves_ablation_rows_out(tmp_path: Path) -> None:
    """The overview figure ranks what a reader compares (models and torch-rechub rows), best mean first; an
    ablation row, even the best-scoring one, belongs to ablation.md and must not enter the ranking."""
    from msmtrec.benchmark.plots import average_auc_plot, ranked_averages

    path = _fake_results(tmp_path) / "results.csv"
    extra = []
    for name, kind, value in (("hef-no-x", "ablation", 0.95), ("rechub-mmoe", "peer", 0.72)):
        for seed in (0, 1):
            for s in ("s0", "s1"):
                extra.append(["d", name, kind, "hef", seed, s, "click", "auc", value + 0.01 * seed])
            extra.append(["d", name, kind, "hef", seed, "all", "all", "best_epoch", 1])
    with path.open("a", newline="") as f:
        csv.writer(f).writerows(extra)
    res = load_results(tmp_path)
    ranked = ranked_averages(res, "d")
    per_seed = ranked["average over cells"]
    assert list(per_seed.index[:2]) == ["hef", "rechub-mmoe"]  # mmoe and single_task tie at 0.70: either order
    assert set(per_seed.index[2:]) == {"mmoe", "single_task"}
    assert per_seed.loc["hef"].tolist() == pytest.approx([0.79, 0.80])
    assert average_auc_plot(res, "d", tmp_path).read_bytes().startswith(PNG_MAGIC)


# --------------------------------------------------------------------------------------------------- peer


@pytest.mark.skipif(not rechub_available(), reason="torch-rechub (the bench extra) is not installed")
@pytest.mark.parametrize("kind", ["mmoe", "ple", "shared_bottom", "esmm"])
def test_rechub_peer_trains_on_our_batches(kind: str) -> None:
    schema = synthetic_schema(tasks=(Task("click", "binary"), Task("buy", "binary", inside="click"),
                                     Task("spend", "regression")))
    view, idx = binary_view(schema)
    assert view.task_names == ["click", "buy"] and idx == [0, 1]
    config = {"embed_dim": 8, "dropout": 0.0, "num_experts": 2, "expert_dims": [16], "tower_dims": [8],
              "levels": 2, "task_experts": 1, "shared_experts": 1, "bottom_dims": [16]}
    torch.manual_seed(0)
    model = build_peer(view, kind, config, {"scenario_feature": True})
    batch = random_batch(view, 64, torch.Generator().manual_seed(0))
    out = model(batch)
    assert set(out) == {"click", "buy"} and all(v.shape == (64,) and torch.isfinite(v).all() for v in out.values())
    one = {k: v[:1] for k, v in batch.items()}  # a last partial batch of one row must not break BatchNorm
    model.train()
    assert set(model(one)) == {"click", "buy"} and model.training
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        out = model(batch)
        loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(out[t], batch["labels"][:, i])
                   for i, t in enumerate(view.task_names))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_a_failed_run_is_noted_and_the_others_still_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from msmtrec.benchmark import runner

    def fake_execute(spec: runner.RunSpec) -> runner.RunOutput:
        if spec.entry.name == "ple":
            raise RuntimeError("boom")
        base = (spec.dataset.label, spec.entry.name, spec.entry.kind, spec.entry.model, spec.seed)
        rows = [(*base, "s0", "click", "auc", 0.7), *((*base, "all", "all", m, 1.0) for m in runner.RUN_METRICS)]
        return runner.RunOutput(spec, rows)

    monkeypatch.setattr(runner, "execute", fake_execute)
    suite = load_suite(_write_suite(tmp_path, "datasets: [hillstrom]\nmodels: [mmoe, ple, single_task]\n"))
    summary = runner.run_suite(suite, tmp_path / "out", seeds=2, progress=False)
    assert summary.completed == 4 and len(summary.failures) == 2 and "boom" in summary.failures[0]
    assert any("ple/seed0 failed" in n for n in json.loads((tmp_path / "out" / "notes.json").read_text()))
    assert runner.done_runs(summary.results) == {("hillstrom", m, s) for m in ("mmoe", "single_task") for s in (0, 1)}



def _fake_run(spec):  # noqa: ANN001, ANN202
    from msmtrec.benchmark import runner

    base = (spec.dataset.label, spec.entry.name, spec.entry.kind, spec.entry.model, spec.seed)
    rows = [(*base, "s0", "click", "auc", 0.7), *((*base, "all", "all", m, 1.0) for m in runner.RUN_METRICS)]
    return runner.RunOutput(spec, rows)


def test_benchmark_set_changes_the_schedule_for_every_model_and_the_folder_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from msmtrec.benchmark import runner

    suite = load_suite(_write_suite(tmp_path, "datasets: [hillstrom]\ntrain: {patience: 3}\nmodels: [mmoe]\n"))
    changed = suite.with_train({"train.evals_per_epoch": "4", "train.patience": "8"})
    assert changed.train["evals_per_epoch"] == 4 and changed.train["patience"] == 8 and suite.train["patience"] == 3
    for bad, message in (({"model.num_experts": "3"}, "only train"), ({"train.evals_per_epoch": "0"}, "evals_per"),
                         ({"train.nope": "1"}, "nope")):
        with pytest.raises(ConfigError, match=message):
            suite.with_train(bad)
    monkeypatch.setattr(runner, "execute", _fake_run)
    path, out = str(tmp_path / "suite.yaml"), str(tmp_path / "out")
    main(["benchmark", path, "--out", out, "--seeds", "1", "--set", "train.evals_per_epoch=2", "--no-progress"])
    record = json.loads((tmp_path / "out" / "suite.json").read_text())
    assert record["train"]["evals_per_epoch"] == 2
    assert "--set train.evals_per_epoch=2" in (tmp_path / "out" / "machine.json").read_text()
    with pytest.raises(SystemExit) as e:  # the same folder under the suite's own schedule is refused
        main(["benchmark", path, "--out", out, "--seeds", "2", "--no-progress"])
    assert e.value.code == 2


def test_a_changed_model_default_is_caught_on_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite names no HEF settings, so before the resolved config was recorded a change of HEF's own
    defaults let a resumed folder mix old and new HEF runs under one name."""
    from msmtrec.benchmark import runner

    monkeypatch.setattr(runner, "execute", _fake_run)
    suite = load_suite(_write_suite(tmp_path, "datasets: [hillstrom]\nmodels: [hef, mmoe]\n"))
    out = tmp_path / "out"
    runner.run_suite(suite, out, seeds=1, progress=False)
    record = json.loads((out / "suite.json").read_text())
    assert record["entries"]["hef"]["resolved"]["levels"] == 2  # defaults are recorded
    record["entries"]["hef"]["resolved"]["levels"] = 3  # as if the folder had been written by another default
    (out / "suite.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=r"'hef' changed .*levels: 3 → 2.*--rerun hef"):
        check_resume(out, suite_record(suite))
    # a setting added to HEF since the folder was written (ADDED_LATER, recorded value = what it trained with)
    # is not a change: the folder resumes without re-running HEF
    record["entries"]["hef"]["resolved"]["levels"] = 2
    del record["entries"]["hef"]["resolved"]["embedding_gate"]
    (out / "suite.json").write_text(json.dumps(record))
    check_resume(out, suite_record(suite))
    check_resume(out, suite_record(suite), ["mmoe"])  # only the variants about to run are compared


def test_rerun_forgets_one_variant_and_keeps_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from msmtrec.benchmark import runner

    monkeypatch.setattr(runner, "execute", _fake_run)
    suite = load_suite(_write_suite(tmp_path, "datasets: [hillstrom]\nmodels: [hef, mmoe]\n"))
    out = tmp_path / "out"
    runner.run_suite(suite, out, seeds=2, progress=False)
    (out / "tune" / "hef").mkdir(parents=True)
    (out / "tune" / "hef" / "study.db").write_text("")
    (out / "tuned.json").write_text(json.dumps({"trials_per_model": 2, "models": {"hef": {}, "mmoe": {}}}))
    dropped = runner.forget(out, ["hef"])
    assert dropped == 2 * (1 + len(runner.RUN_METRICS))
    assert runner.done_runs(out / "results.csv") == {("hillstrom", "mmoe", s) for s in (0, 1)}
    assert not (out / "tune" / "hef").exists()
    assert set(json.loads((out / "tuned.json").read_text())["models"]) == {"mmoe"}
    assert "hef" not in json.loads((out / "suite.json").read_text())["entries"]
    assert runner.run_suite(suite, out, seeds=2, progress=False).completed == 2  # hef again, mmoe kept
    # a variant the suite no longer lists (renamed, removed) can still be dropped from the folder
    smaller = _write_suite(tmp_path, "datasets: [hillstrom]\nmodels: [mmoe]\n")
    with pytest.raises(SystemExit):  # --rerun cannot go with --report-only
        main(["benchmark", str(smaller), "--out", str(out), "--rerun", "hef", "--report-only", "--no-progress"])
    monkeypatch.setattr(runner, "execute", _fake_run)
    main(["benchmark", str(smaller), "--out", str(out), "--seeds", "2", "--rerun", "hef", "--no-progress"])
    assert runner.done_runs(out / "results.csv") == {("hillstrom", "mmoe", s) for s in (0, 1)}
    assert "hef" not in json.loads((out / "suite.json").read_text())["order"]  # nor listed in the reports' order
    with pytest.raises(SystemExit) as e:
        main(["benchmark", str(tmp_path / "suite.yaml"), "--out", str(out), "--rerun", "nope", "--no-progress"])
    assert e.value.code == 2


def _append_blocks(path: str, writer: int) -> None:
    from msmtrec.benchmark.runner import append_rows

    for block in range(40):  # ~60 kB per block: far more than one buffered chunk
        append_rows(Path(path), [(writer, block, i, "x" * 180) for i in range(300)])


def test_two_processes_appending_to_one_results_file_keep_every_run_whole(tmp_path: Path) -> None:
    """Two benchmark commands may fill one folder at once; each run's rows must stay whole and together."""
    import multiprocessing

    path = tmp_path / "results.csv"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_blocks, args=(str(path), w)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 2 * 40 * 300 and all(len(r) == 4 and r[3] == "x" * 180 for r in rows)
    for start in range(0, len(rows), 300):  # blocks are contiguous: 300 rows of one (writer, block) each
        assert len({(r[0], r[1]) for r in rows[start:start + 300]}) == 1

# ----------------------------------------------------------------------------------------------- end to end


@needs_data
def test_quick_hillstrom_benchmark_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    start = time.perf_counter()
    main(["benchmark", "hillstrom", "--quick", "--out", str(out), "--no-progress"])
    elapsed = time.perf_counter() - start
    assert elapsed < 90, f"quick benchmark took {elapsed:.0f}s"

    with (out / "results.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == RESULT_COLUMNS
        rows = list(reader)
    quick = load_suite("hillstrom").quick_version()
    expected = {e.name for e in quick.entries if e.kind != "peer" or rechub_available()}
    assert {r["model"] for r in rows} == expected
    assert {r["seed"] for r in rows} == {"0"}
    scenarios = {r["scenario"] for r in rows}
    assert {"all", "Mens E-Mail", "No E-Mail", "Womens E-Mail"} <= scenarios
    assert {"auc", "logloss", "rmse", "params", "samples_per_second", "inference_rows_per_second",
            "valid_monitor"} <= {
        r["metric"] for r in rows
    }
    assert all(float(r["value"]) == float(r["value"]) for r in rows)  # no NaN written

    summary = (out / "summary.md").read_text()
    assert "| model" in summary and "**" in summary and "### AUC" in summary and "### RMSE" in summary
    assert "msmtrec benchmark hillstrom --seeds 1 --quick" in summary
    assert "| hef " in (out / "ablation.md").read_text() and "hef-attention" in (out / "ablation.md").read_text()
    assert "seesaw" in (out / "seesaw.md").read_text() and "| mmoe" in (out / "seesaw.md").read_text()
    cost = (out / "cost.md").read_text()
    assert "train samples/s" in cost and "inference rows/s" in cost
    if rechub_available():
        assert "mmoe vs rechub-mmoe" in cost
    for png in ("auc_hillstrom", "transfer_hillstrom", "hef_gates_hillstrom"):
        data = (out / f"{png}.png").read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), png
    assert not (out / "hef_mixing_hillstrom.png").exists()  # the default HEF has only shared experts to mix

    # resumable: the same command again finds every run done and adds nothing
    before = (out / "results.csv").read_text()
    main(["benchmark", "hillstrom", "--quick", "--out", str(out), "--no-progress"])
    assert (out / "results.csv").read_text() == before
