"""``--set`` values reach typed configs with the right type, including ``X | None`` fields."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest

from msmtrec.config import build_config
from msmtrec.errors import ConfigError


@dataclasses.dataclass
class _Example:
    rate: float | None = None
    count: int | None = 3
    flag: bool = False


def test_pep604_optional_numbers_are_coerced() -> None:
    cfg = build_config(_Example, {"rate": "0.5", "count": "7", "flag": "yes"})
    assert cfg.rate == 0.5 and isinstance(cfg.rate, float)
    assert cfg.count == 7 and isinstance(cfg.count, int)
    assert cfg.flag is True


def test_pep604_optional_accepts_none() -> None:
    cfg = build_config(_Example, {"rate": "none", "count": "null"})
    assert cfg.rate is None and cfg.count is None


def test_pep604_optional_rejects_text() -> None:
    with pytest.raises(ConfigError, match=r"config\.rate"):
        build_config(_Example, {"rate": "fast"})


def test_cli_commands_register_once() -> None:
    """``main`` may be called many times in one process (tests, notebooks); commands must not pile up."""
    from msmtrec import cli

    with contextlib.suppress(SystemExit):
        cli.main(["--help"])
    first = len(cli.app.registered_commands), len(cli.app.registered_groups)
    with contextlib.suppress(SystemExit):
        cli.main(["--help"])
    assert (len(cli.app.registered_commands), len(cli.app.registered_groups)) == first
