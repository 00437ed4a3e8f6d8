"""``msmtrec plot`` and the progress output: a bar on a terminal, plain per-epoch lines in a log file."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from msmtrec.cli.plot import register as register_plot
from msmtrec.data.sources import load_planted
from msmtrec.errors import MsmtrecError
from msmtrec.models import build_model
from msmtrec.training import TrainConfig, Trainer
from msmtrec.training.curves import metric_columns, plot_run, read_history


def _fit(run_dir: Path | None = None, **train) -> None:  # noqa: ANN003
    data = load_planted(1000)
    torch.manual_seed(0)
    model = build_model("mmoe", data.schema, {"embed_dim": 4})
    cfg = TrainConfig(**{"batch_size": 100, "max_epochs": 2, "patience": 9, "log_every": 2, **train})
    Trainer(cfg, seed=0, run_dir=run_dir).fit(model, data.splits)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_file_gets_plain_epoch_lines_without_carriage_returns(capsys: pytest.CaptureFixture) -> None:
    _fit(progress=True)  # stderr is captured: not a terminal
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("epoch ")]
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1/2", "epoch 2/2"]
    assert "samples/s" in lines[0] and "click=" in lines[0]


def test_progress_false_keeps_epoch_lines_and_log_epochs_false_is_silent(capsys: pytest.CaptureFixture) -> None:
    _fit(progress=False)
    assert sum(ln.startswith("epoch ") for ln in capsys.readouterr().err.splitlines()) == 2
    _fit(progress=False, log_epochs=False)
    assert capsys.readouterr().err == ""


def test_terminal_gets_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    _fit(progress=True)
    out = term.getvalue()
    assert "\r" in out and "batch" in out  # tqdm redraws its bar in place
    assert "epoch 2/2:" in out


def test_plot_writes_loss_and_per_task_curves_per_scenario(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _fit(run, progress=False)
    history = read_history(run)
    columns = metric_columns(history)
    assert set(columns) == {"click", "buy", "value"}
    assert set(columns["click"]["auc"]) == {"s0", "s1", "s2", "overall"}  # every scenario and the pooled line
    assert set(columns["value"]) == {"rmse", "mae"}
    with (run / "history.csv").open() as f:
        row = next(csv.DictReader(f))
    assert float(row["valid/s1/click/auc"]) > 0  # per-scenario validation metrics are in the history

    app = typer.Typer(add_completion=False)
    register_plot(app)
    res = CliRunner().invoke(app, [str(run), "--out", str(tmp_path / "png")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    names = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert names == ["loss.png", "valid_buy.png", "valid_click.png", "valid_value.png"]
    for p in (tmp_path / "png").iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


def test_plot_without_history_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(MsmtrecError, match="history.csv"):
        plot_run(tmp_path)
