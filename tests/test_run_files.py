"""Damaged run folders: every command that loads a run answers in one line (file, what is wrong, what to do)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from msmtrec import runs
from msmtrec.errors import MsmtrecError
from msmtrec.serving.export import export_run
from msmtrec.serving.predict import predict_file
from msmtrec.serving.scorer import Scorer
from msmtrec.training.run import evaluate, train

SETS = {"train.max_epochs": 1, "train.progress": False, "model.embed_dim": 4, "model.bottom_dims": [8],
        "model.tower_dims": [4]}


def write_data(folder: Path, categories: int) -> Path:
    """A tiny CSV dataset whose ``c1`` has ``categories`` values (so vocabularies, and weights, differ)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(categories)
    lines = ["c1,x,scen,click"] + [
        f"v{rng.integers(categories)},{rng.normal():.3f},s{i % 2},{int(rng.random() < 0.3)}" for i in range(300)
    ]
    (folder / "d.csv").write_text("\n".join(lines) + "\n")
    spec = folder / "s.yaml"
    spec.write_text(
        f"name: tiny{categories}\nfiles: {{path: {folder}/d.csv}}\nscenario: {{column: scen}}\n"
        "tasks: [{name: click, label: click}]\nfeatures: {sparse: [c1], dense: [x]}\n"
    )
    return spec


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real runs on datasets of different vocabularies, trained once for the module."""
    base = tmp_path_factory.mktemp("runs")
    out = {}
    for k in (3, 7):
        spec = write_data(base / f"data{k}", k)
        train(base / f"run{k}", data=str(spec), model_name="shared_bottom", sets=SETS)
        out[f"run{k}"] = base / f"run{k}"
        out[f"data{k}"] = base / f"data{k}"
    return out


@pytest.fixture
def run(trained: dict[str, Path], tmp_path: Path) -> Path:
    """A fresh copy of the 3-category run, free to damage."""
    return Path(shutil.copytree(trained["run3"], tmp_path / "run"))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def loaders(run: Path, data: Path, tmp: Path) -> dict[str, object]:
    """Every way a run folder is loaded: evaluate, predict, export, serve (the scorer)."""
    return {
        "load_run": lambda: runs.load_run(run),
        "evaluate": lambda: evaluate(run),
        "predict": lambda: predict_file(run, data / "d.csv", tmp / "p.csv"),
        "export": lambda: export_run(run, "torchscript", tmp / "m.pt"),
        "serve": lambda: Scorer.load(run),
    }


def assert_every_loader_says(run: Path, data: Path, tmp: Path, pattern: str) -> None:
    for name, load in loaders(run, data, tmp).items():
        with pytest.raises(MsmtrecError, match=pattern) as e:
            load()  # type: ignore[operator]
        msg = str(e.value)
        assert "\n" not in msg and "weights_only=False" not in msg, (name, msg)


def test_truncated_model_pt(run: Path, trained: dict[str, Path], tmp_path: Path) -> None:
    truncate(run / "model.pt")
    assert_every_loader_says(
        run, trained["data3"], tmp_path, r"model\.pt: truncated or damaged checkpoint \([\d,]+ bytes; .*retrain"
    )
    (run / "model.pt").write_bytes(b"")
    assert_every_loader_says(run, trained["data3"], tmp_path, r"model\.pt: empty checkpoint")


def test_unsafe_pickle_is_refused_without_suggesting_an_unsafe_load(
    run: Path, trained: dict[str, Path], tmp_path: Path
) -> None:
    torch.save({"weights": argparse.Namespace(x=1)}, run / "model.pt")
    assert_every_loader_says(
        run, trained["data3"], tmp_path,
        r"model\.pt: not a plain tensor checkpoint \(it holds a pickled argparse\.Namespace.*state_dict",
    )


def test_checkpoint_of_another_schema_names_parameter_and_shapes(
    run: Path, trained: dict[str, Path], tmp_path: Path
) -> None:
    shutil.copy(trained["run7"] / "model.pt", run / "model.pt")
    assert_every_loader_says(
        run, trained["data3"], tmp_path,
        r"model\.pt: parameter '[\w.]+' has shape \[8, 4\] in the checkpoint but \[4, 4\] in the model built "
        r"from .*preprocessor\.json .*another dataset schema",
    )


def test_cli_commands_answer_in_one_line_exit_2(run: Path, trained: dict[str, Path], tmp_path: Path) -> None:
    truncate(run / "model.pt")
    for args in (
        ["evaluate", str(run)],
        ["predict", str(run), "-i", str(trained["data3"] / "d.csv"), "-o", str(tmp_path / "p.csv")],
        ["export", str(run), "--format", "torchscript", "-o", str(tmp_path / "m.pt")],
    ):
        r = subprocess.run([sys.executable, "-m", "msmtrec.cli", *args], capture_output=True, text=True)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.strip().count("\n") == 0 and "model.pt: truncated" in r.stderr, (args, r.stderr)


def test_resume_from_a_damaged_or_foreign_last_pt(run: Path, trained: dict[str, Path]) -> None:
    truncate(run / "last.pt")
    with pytest.raises(MsmtrecError, match=r"last\.pt: truncated or damaged checkpoint") as e:
        train(run, resume=True)
    assert "\n" not in str(e.value)
    torch.save({"x": argparse.Namespace()}, run / "last.pt")
    with pytest.raises(MsmtrecError, match=r"last\.pt: not a plain tensor checkpoint"):
        train(run, resume=True)
    torch.save({"x": torch.zeros(1)}, run / "last.pt")
    with pytest.raises(MsmtrecError, match=r"last\.pt: not an msmtrec training state"):
        train(run, resume=True)
    shutil.copy(trained["run7"] / "last.pt", run / "last.pt")
    with pytest.raises(MsmtrecError, match=r"last\.pt: parameter '[\w.]+' has shape \[8, 4\] in the checkpoint"):
        train(run, resume=True)


def test_stale_temporary_checkpoints_are_removed(run: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = run / ".model.pt.99999999.tmp"  # pid above the kernel's pid_max: a killed writer's leftover
        dead.write_bytes(b"torn")
        busy = run / f".last.pt.{live.pid}.tmp"  # a writer that still runs keeps its file
        busy.write_bytes(b"being written")
        assert runs.remove_stale_temporaries(run) == [dead]
        assert not dead.exists() and busy.exists()
    finally:
        live.kill()
        live.wait()
    assert runs.remove_stale_temporaries(run) == [busy]


def test_train_resume_cleans_up_what_a_kill_left(run: Path) -> None:
    (run / ".last.pt.99999999.tmp").write_bytes(b"torn")
    (run / ".model.pt.99999998.tmp").write_bytes(b"torn")
    train(run, resume=True)  # finished run: resumes to the same result, and sweeps the leftovers
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]


def test_best_epoch_is_one_based_on_console_metrics_and_history(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import csv
    import json
    import re

    sets = {**SETS, "train.max_epochs": 3, "train.patience": 3}
    train(tmp_path / "r", data=str(trained["data3"] / "s.yaml"), model_name="shared_bottom", sets=sets)
    printed = int(re.search(r"best epoch (\d+)", capsys.readouterr().out).group(1))  # type: ignore[union-attr]
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    history = list(csv.DictReader((tmp_path / "r" / "history.csv").open()))
    assert [int(r["epoch"]) for r in history] == [1, 2, 3]
    best = max(history, key=lambda r: float(r["valid/monitor"]))
    assert printed == metrics["best_epoch"] == int(best["epoch"])


def test_model_help_lists_every_registered_model() -> None:
    from msmtrec.cli.train import zoo_names
    from msmtrec.models import registered_models

    assert zoo_names() == registered_models()
    r = subprocess.run([sys.executable, "-m", "msmtrec.cli", "train", "--help"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "400"})
    assert r.returncode == 0
    assert all(name in r.stdout for name in registered_models()), r.stdout


def test_a_hef_run_saved_before_base_skip_existed_loads_as_it_was_trained(tmp_path: Path) -> None:
    """Run folders store the fully resolved model config; one written before ``base_skip`` existed has no
    such key and was trained without the skip. It must rebuild as that model (not today's default, whose
    towers are wider) and load its weights; a hand-written partial config still gets today's defaults."""
    import yaml

    from msmtrec.serving.testing import make_run_dir

    old = make_run_dir(tmp_path / "old", "hef", {"embed_dim": 8, "base_skip": "none"})
    config = yaml.safe_load((old / runs.CONFIG).read_text())
    del config["model"]["base_skip"]
    (old / runs.CONFIG).write_text(yaml.safe_dump(config))
    loaded = runs.load_run(old)
    assert loaded.model.config.base_skip == "none" and loaded.model.skip_gate is None
    partial = {"model_name": "hef", "model": {"embed_dim": 8}}
    assert "base_skip" not in runs.saved_model_config(partial)


def test_a_hef_run_trained_with_the_published_extraction_loads_after_the_lean_default(tmp_path: Path) -> None:
    """HEF's defaults changed (2026-11-30: no scenario or task experts, uniform mixing, no skip); a run saved
    under the previous default stores those settings and must rebuild as trained, with its experts, mixing
    table and skip gate, not as today's smaller default (whose state dict would not fit its weights)."""
    from msmtrec.serving.testing import make_run_dir

    before = {"embed_dim": 8, "scenario_experts": 1, "task_experts": 1, "mixing": "learned", "base_skip": "gated"}
    folder = make_run_dir(tmp_path / "run", "hef", before)
    loaded = runs.load_run(folder).model.config
    assert (loaded.scenario_experts, loaded.task_experts, loaded.mixing, loaded.base_skip) == (1, 1, "learned", "gated")
