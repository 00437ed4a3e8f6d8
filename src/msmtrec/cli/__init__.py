"""The ``msmtrec`` command line. Each command group lives in its own module and is added here.

User errors (:class:`~msmtrec.errors.MsmtrecError`) print one line and exit with status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys

import typer

from msmtrec.errors import MsmtrecError

app = typer.Typer(
    name="msmtrec",
    help="Multi-scenario, multi-task prediction for e-commerce.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# (module, attribute, name): groups become `msmtrec NAME ...`; commands are registered on `app` directly.
_GROUPS = [
    ("msmtrec.cli.data", "app", "data"),
]
_COMMAND_MODULES = [
    "msmtrec.cli.train",
    "msmtrec.cli.serve",
    "msmtrec.cli.bench",
    "msmtrec.cli.tune",
    "msmtrec.cli.plot",
    "msmtrec.cli.monitor",
]

_state = {"debug": False, "loaded": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug


def _import_optional(module: str) -> object | None:
    """The module, or ``None`` when it is not part of this install (missing modules of its own still raise)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return None
        raise


def _load() -> None:
    """Register the command modules once; ``main`` may be called many times in one process."""
    if _state["loaded"]:
        return
    _state["loaded"] = True
    for module, attr, name in _GROUPS:
        mod = _import_optional(module)
        if mod is not None:
            app.add_typer(getattr(mod, attr), name=name)
    for module in _COMMAND_MODULES:
        mod = _import_optional(module)
        if mod is not None:
            mod.register(app)  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    _load()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=False)
    except MsmtrecError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors and the like
        if isinstance(e, _click_exceptions("ClickException")):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, _click_exceptions("Abort")):
            sys.exit(1)
        raise


def _click_exceptions(name: str) -> tuple[type[BaseException], ...]:
    """``click.exceptions.NAME`` and, where typer vendors its own click (typer ≥ 0.2x), typer's copy of it:
    the two are unrelated classes, so a usage error from either must be recognised (else it is a traceback)."""
    import click

    found: list[type[BaseException]] = [getattr(click.exceptions, name)]
    try:
        from typer._click import exceptions as vendored  # type: ignore[import-not-found]
    except ImportError:
        return tuple(found)
    found.append(getattr(vendored, name))
    return tuple(found)
