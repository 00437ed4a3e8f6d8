"""``msmtrec tune``: declared search spaces, a resumable study that never reads the test split, and outputs
(best.yaml that ``msmtrec train --config`` accepts, Optuna plots). CI-sized: ``--quick``, 2-3 trials."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from msmtrec.benchmark.suite import load_suite
from msmtrec.benchmark.tune import TuneTarget, resolve_target, tune
from msmtrec.cli import main
from msmtrec.config import build_config
from msmtrec.data.spec import data_root
from msmtrec.errors import ConfigError
from msmtrec.models.base import DEFAULT_SEARCH_SPACE, Param, model_class, registered_models
from msmtrec.training.run import read_config_file

HAVE_DATA = (data_root() / "hillstrom" / "hillstrom.csv").exists()
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="shared hillstrom data not found")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", registered_models())
def test_every_model_declares_a_buildable_space(name: str) -> None:
    """Every registered model (new ones included) has a space whose every choice builds its config."""
    target = resolve_target("hillstrom", name) if name in {e.name for e in load_suite("hillstrom").entries} else (
        TuneTarget(load_suite("hillstrom").datasets[0], name, name, {}, {}, 16))
    space = target.space()
    assert {"train.lr", "train.weight_decay", "model.dropout"} <= set(space)
    fields = {f.name for f in dataclasses.fields(model_class(name).Config)}
    for key, p in space.items():
        section, _, field = key.partition(".")
        if section == "model":
            assert field in fields
        if p.kind == "choice":
            for c in p.choices:
                build_config(model_class(name).Config, {**target.base_config, field: c} if section == "model"
                             else target.base_config)
    assert max(space["model.embed_dim"].choices) <= 16  # the suite budget caps embedding sizes


def test_models_extend_the_default_space() -> None:
    assert set(DEFAULT_SEARCH_SPACE) <= set(model_class("mmoe").search_space())
    assert "model.num_experts" in model_class("mmoe").search_space()
    assert "model.shared_experts" in model_class("hef").search_space()
    assert model_class("shared_bottom").search_space()["model.bottom_dims"].kind == "choice"
    assert Param.real(1e-4, 1e-2, log=True).log


def test_tune_target_errors() -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        resolve_target("hillstrom.yaml.nope", "nope")
    with pytest.raises(ConfigError, match="not a model entry"):
        resolve_target("hillstrom", "no_such_model")


class _NoTest(dict):
    """A splits mapping that fails the test if anyone asks for the test split."""

    def __getitem__(self, key: str):  # noqa: ANN204
        if key == "test":
            raise AssertionError("the tuner read the test split")
        return super().__getitem__(key)


@needs_data
def test_quick_tune_writes_outputs_resumes_and_never_reads_test(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from msmtrec.benchmark import runner

    real = runner.prepared

    def guarded(entry):  # noqa: ANN001, ANN202
        data = real(entry)
        return dataclasses.replace(data, splits=_NoTest(data.splits)) if dataclasses.is_dataclass(data) else data

    monkeypatch.setattr(runner, "prepared", guarded)
    out = tmp_path / "study"
    main(["tune", "hillstrom", "--model", "mmoe", "--trials", "2", "--quick", "--out", str(out)])
    for name in ("study.db", "trials.csv", "best.yaml", "tune.json"):
        assert (out / name).exists(), name
    assert (out / "history.png").read_bytes().startswith(PNG_MAGIC)
    cfg = read_config_file(out / "best.yaml")  # the train command's own reader accepts it
    assert cfg["model_name"] == "mmoe" and cfg["data"] == "hillstrom" and cfg["train"]["monitor"] == "weighted_auc"
    assert {"num_experts", "expert_dims", "embed_dim"} <= set(cfg["model"])

    # a trial left RUNNING by a killed process is not counted; the study resumes to the requested size
    import optuna

    study = optuna.load_study(study_name="hillstrom-mmoe", storage=f"sqlite:///{out / 'study.db'}")
    study.ask()  # what a kill -9 mid-trial leaves behind
    target = resolve_target("hillstrom", "mmoe", quick=True)
    result = tune(target, 3, out)
    assert result.ran == 1 and result.trials == 3
    again = tune(target, 3, out)
    assert again.ran == 0  # nothing left to do
    states = [t.state.name for t in optuna.load_study(study_name="hillstrom-mmoe",
                                                      storage=f"sqlite:///{out / 'study.db'}").trials]
    assert states.count("FAIL") == 1 and len(states) == 4
    # the first trial is the suite's hand-set config
    assert study.trials[0].user_attrs.get("origin") == "suite config"


@needs_data
def test_a_changed_target_refuses_to_resume(tmp_path: Path) -> None:
    target = resolve_target("hillstrom", "single_task", quick=True)
    target.train = {**target.train, "max_epochs": 1}
    tune(target, 1, tmp_path)
    other = dataclasses.replace(target, train={**target.train, "batch_size": 512})
    with pytest.raises(ConfigError, match="different 'train'"):
        tune(other, 1, tmp_path)
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["model_name"] == "single_task"



@needs_data
def test_a_study_does_not_resume_across_a_changed_model_default(tmp_path: Path) -> None:
    """The suite names no HEF setting, so the study's base config is the same before and after a change of
    HEF's defaults; its finished trials trained the old model and must not be resumed as the new one."""
    import json

    target = resolve_target("hillstrom", "single_task", quick=True)
    target.train = {**target.train, "max_epochs": 1}
    tune(target, 1, tmp_path)
    record = json.loads((tmp_path / "tune.json").read_text())
    assert record["resolved_base"]["bottom_dims"] is not None  # the defaults are recorded
    record["resolved_base"]["bottom_dims"] = [7]  # as if written when the default was another
    (tmp_path / "tune.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=r"other defaults \(bottom_dims: \[7\] → "):
        tune(target, 2, tmp_path)


@needs_data
def test_a_study_resumes_across_a_setting_added_since(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A setting added to a model after a study was recorded (listed in ``ADDED_LATER`` with the value the old
    model had) is not another model: the study resumes instead of demanding a re-run."""
    import json

    from msmtrec.models.base import model_class

    target = resolve_target("hillstrom", "single_task", quick=True)
    target.train = {**target.train, "max_epochs": 1}
    tune(target, 1, tmp_path)
    record = json.loads((tmp_path / "tune.json").read_text())
    config = model_class("single_task").Config
    monkeypatch.setattr(config, "ADDED_LATER", {"bottom_dims": record["resolved_base"]["bottom_dims"]})
    del record["resolved_base"]["bottom_dims"]  # as if written before the setting existed
    (tmp_path / "tune.json").write_text(json.dumps(record))
    assert tune(target, 2, tmp_path).model_config is not None  # resumed: no ConfigError


# ------------------------------------------------------------------------------------ tuned benchmark


def test_tuned_suite_gives_ablations_and_peers_the_tuned_config(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """No training: each study 'finds' a distinct config; the suite's entries must be rebuilt from it."""
    from msmtrec.benchmark import tune as tune_mod

    calls: list[str] = []

    def fake_tune(target, trials, out, **kw):  # noqa: ANN001, ANN003, ANN202
        calls.append(target.variant)
        model_config = {**target.base_config, "dropout": 0.2, "embed_dim": 8}
        return tune_mod.TuneResult(out, 0.7, {"model.dropout": 0.2}, model_config,
                                   {**target.train, "lr": 0.003}, trials, trials)

    monkeypatch.setattr(tune_mod, "tune", fake_tune)
    suite = load_suite("hillstrom")
    tuned = tune_mod.tuned_suite(suite, tmp_path, 4, only=["hef-no-star", "rechub-ple", "single_task"])
    assert sorted(calls) == ["hef", "ple", "single_task"]  # each study once, for the rows asked for
    by = {e.name: e for e in tuned.entries}
    assert by["hef-no-star"].config["star"] is False and by["hef-no-star"].config["embed_dim"] == 8
    assert by["hef-no-star"].train == {"lr": 0.003}
    assert by["rechub-ple"].config["embed_dim"] == 8 and by["rechub-ple"].train == {"lr": 0.003}
    assert by["mmoe"].config == suite.entry("mmoe").config  # not asked for: untouched
    record = __import__("json").loads((tmp_path / "tuned.json").read_text())
    assert record["trials_per_model"] == 4 and set(record["models"]) == {"hef", "ple", "single_task"}


@needs_data
def test_quick_tuned_benchmark_end_to_end(tmp_path: Path) -> None:
    import json

    out = tmp_path / "bench"
    main(["benchmark", "hillstrom", "--quick", "--tuned", "--trials", "2", "--models", "mmoe", "--out", str(out),
          "--no-progress"])
    tuned = json.loads((out / "tuned.json").read_text())
    assert tuned["trials_per_model"] == 2 and tuned["models"]["mmoe"]["trials"] == 2
    entry = json.loads((out / "suite.json").read_text())["entries"]["mmoe"]
    best = yaml.safe_load((out / "tune" / "mmoe" / "best.yaml").read_text())
    assert entry["config"]["embed_dim"] == best["model"]["embed_dim"]  # the seeds ran the tuned config
    assert "Tuned mode" in (out / "summary.md").read_text()
