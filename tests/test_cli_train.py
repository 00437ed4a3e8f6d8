"""``msmtrec train`` / ``msmtrec evaluate``: the run directory, its files, config layering and errors."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from msmtrec.cli.train import register
from msmtrec.errors import ConfigError

SMALL = ["--set", "model.embed_dim=8", "--set", "model.bottom_dims=32", "--set", "model.tower_dims=16",
         "--set", "train.batch_size=128", "--set", "train.progress=false"]


@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    register(app)
    return app


def _invoke(app: typer.Typer, *args: str):  # noqa: ANN202
    return CliRunner().invoke(app, list(args))


def test_train_and_evaluate_planted(cli: typer.Typer, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"dropout": 0.0}, "train": {"lr": 0.01, "max_epochs": 5}}))
    res = _invoke(cli, "train", "--data", "planted:2000", "--model", "shared_bottom", "--config", str(cfg),
                  *SMALL, "--epochs", "2", "--seed", "4", "--out", str(run))
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "click AUC" in res.output and "overall" in res.output
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "schema.json", "model.pt", "last.pt", "history.csv", "metrics.json"} <= names

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model_name"] == "shared_bottom" and config["data"] == "planted:2000" and config["seed"] == 4
    assert config["model"]["dropout"] == 0.0 and config["model"]["embed_dim"] == 8  # file, then --set
    assert config["train"]["lr"] == 0.01 and config["train"]["max_epochs"] == 2  # --epochs beats the file

    state = torch.load(run / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())

    rows = list(csv.DictReader((run / "history.csv").open()))
    assert len(rows) == 2 and {"train_loss/click", "train_loss/value", "valid/mean_auc"} <= set(rows[0])

    m = json.loads((run / "metrics.json").read_text())
    for key in ("mean_auc", "model", "dataset", "seed", "params", "train_seconds", "samples_per_second",
                "split", "overall", "by_scenario"):
        assert key in m, key
    assert m["split"] == "test" and m["seed"] == 4 and m["params"] > 0
    assert set(m["by_scenario"]) == {"s0", "s1", "s2"}
    click = m["by_scenario"]["s0"]["click"]
    assert {"auc", "logloss", "gauc", "rows", "positives", "pred_mean", "label_mean"} <= set(click)
    assert {"rmse", "mae", "rows", "pred_mean", "label_mean"} <= set(m["overall"]["value"])

    out = tmp_path / "eval.json"
    res = _invoke(cli, "evaluate", str(run), "--output", str(out))
    assert res.exit_code == 0, res.output + repr(res.exception)
    again = json.loads(out.read_text())
    assert again["overall"] == m["overall"] and again["by_scenario"] == m["by_scenario"]
    res = _invoke(cli, "evaluate", str(run), "--split", "valid")
    assert res.exit_code == 0 and "valid split" in res.output

    # the run's own config.yaml is a valid --config for a reproduction
    res = _invoke(cli, "train", "--config", str(run / "config.yaml"), "--out", str(tmp_path / "again"))
    assert res.exit_code == 0, res.output + repr(res.exception)
    repro = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert repro["overall"] == m["overall"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "shared_bottom", "--set", "model.no_such_key=1"], "unknown key"),
        (["--model", "shared_bottom", "--set", "embedding_size=3"], "unknown key"),
        (["--model", "no_such_model"], "unknown model"),
        (["--model", "shared_bottom", "--set", "train.optimizer=sgd"], "optimizer"),
    ],
)
def test_config_errors(cli: typer.Typer, tmp_path: Path, args: list[str], message: str) -> None:
    res = _invoke(cli, "train", "--data", "planted:500", *args, "--out", str(tmp_path / "r"))
    assert isinstance(res.exception, ConfigError) and message in str(res.exception)
    assert not (tmp_path / "r" / "config.yaml").exists()


def test_out_dir_taken_and_resume_needs_run(cli: typer.Typer, tmp_path: Path) -> None:
    run = tmp_path / "r"
    assert _invoke(cli, "train", "--data", "planted:500", "--model", "shared_bottom", *SMALL, "--epochs", "1",
                   "--out", str(run)).exit_code == 0
    res = _invoke(cli, "train", "--data", "planted:500", "--model", "shared_bottom", "--out", str(run))
    assert isinstance(res.exception, ConfigError) and "--resume" in str(res.exception)
    res = _invoke(cli, "train", "--resume", str(tmp_path / "nothing"))
    assert isinstance(res.exception, ConfigError)
    # resuming a finished run just rewrites its metrics
    before = json.loads((run / "metrics.json").read_text())
    assert _invoke(cli, "train", "--resume", str(run)).exit_code == 0
    after = json.loads((run / "metrics.json").read_text())
    assert after["overall"] == before["overall"]


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_user_error_is_one_line_exit_2(tmp_path: Path) -> None:
    code = "import sys; from msmtrec.cli import main; sys.exit(main(sys.argv[1:]))"
    res = subprocess.run(
        [sys.executable, "-c", code, "train", "--data", "planted", "--model", "shared_bottom",
         "--set", "train.lr_typo=1", "--out", str(tmp_path / "r")],
        capture_output=True, text=True, env=_subprocess_env(), timeout=120,
    )
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error:") and len(res.stderr.strip().splitlines()) == 1



@pytest.mark.parametrize("argv", [["train", "--no-such-option"], ["benchmark", "hillstrom", "--no-progres"],
                                  ["no-such-command"]])
def test_usage_error_is_a_short_message_exit_2_not_a_traceback(argv: list[str]) -> None:
    """Typer ≥ 0.2x vendors click: its usage errors are not ``click.ClickException`` and used to escape
    ``main`` as a traceback (seen with ``msmtrec train --no-progress``)."""
    code = "import sys; from msmtrec.cli import main; sys.exit(main(sys.argv[1:]))"
    res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                         env=_subprocess_env(), timeout=120)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert "No such" in res.stderr

def _hillstrom_available() -> bool:
    if importlib.util.find_spec("msmtrec.data.pipeline") is None:
        return False
    from msmtrec.data.spec import data_root

    return (data_root() / "hillstrom" / "hillstrom.csv").exists()


@pytest.mark.skipif(not _hillstrom_available(), reason="data pipeline or shared Hillstrom data not available")
def test_train_and_evaluate_hillstrom_sample(tmp_path: Path) -> None:
    code = "import sys; from msmtrec.cli import main; sys.exit(main(sys.argv[1:]))"
    run = tmp_path / "hill"
    res = subprocess.run(
        [sys.executable, "-c", code, "train", "--data", "hillstrom", "--model", "shared_bottom", "--sample", "6000",
         "--epochs", "1", "--set", "train.progress=false", "--out", str(run)],
        capture_output=True, text=True, env=_subprocess_env(), timeout=300, cwd=Path(__file__).parents[1],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert {"preprocessor.json", "config.yaml", "model.pt", "metrics.json", "history.csv"} <= {
        p.name for p in run.iterdir()
    }
    m = json.loads((run / "metrics.json").read_text())
    assert m["dataset"] == "hillstrom" and set(m["overall"]) == {"visit", "conversion", "spend"}
    assert m["mean_auc"] is not None and 0.4 < m["mean_auc"] < 0.9
    res = subprocess.run(
        [sys.executable, "-c", code, "evaluate", str(run), "--output", str(tmp_path / "e.json")],
        capture_output=True, text=True, env=_subprocess_env(), timeout=300, cwd=Path(__file__).parents[1],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "visit AUC" in res.stdout
    again = json.loads((tmp_path / "e.json").read_text())
    assert again["overall"] == m["overall"]
