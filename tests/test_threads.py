"""Thread defaults: one intra-op torch thread per process unless ``--threads`` / ``train.num_threads`` ask for more."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from msmtrec.cli.options import DEFAULT_THREADS, use_threads
from msmtrec.cli.train import register
from msmtrec.training import TrainConfig

SMALL = ["--set", "model.embed_dim=4", "--set", "model.bottom_dims=8", "--set", "model.tower_dims=4",
         "--set", "train.batch_size=256", "--set", "train.progress=false", "--epochs", "1"]


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    register(app)
    return app


def test_default_is_one_thread() -> None:
    assert TrainConfig().num_threads == DEFAULT_THREADS == 1


def test_use_threads_sets_and_zero_leaves_alone() -> None:
    use_threads(2)
    assert torch.get_num_threads() == 2
    use_threads(0)
    use_threads(None)
    assert torch.get_num_threads() == 2


def test_train_defaults_to_one_thread_and_threads_flag_wins(cli: typer.Typer, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    res = CliRunner().invoke(cli, ["train", "--data", "planted:1000", "--model", "shared_bottom", *SMALL,
                                   "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert torch.get_num_threads() == 1  # the trainer applied the one-thread default
    assert yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["train"]["num_threads"] == 1

    res = CliRunner().invoke(cli, ["train", "--data", "planted:1000", "--model", "shared_bottom", *SMALL,
                                   "--threads", "2", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert torch.get_num_threads() == 2
    assert yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["train"]["num_threads"] == 2

    torch.set_num_threads(2)
    res = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert torch.get_num_threads() == 1
    res = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "a"), "--threads", "2"])
    assert res.exit_code == 0 and torch.get_num_threads() == 2


def test_negative_threads_refused(cli: typer.Typer, tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["train", "--data", "planted:1000", "--model", "shared_bottom",
                                   "--threads", "-1", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--threads" in res.output
