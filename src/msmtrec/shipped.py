"""Shipped YAML files (dataset specs, benchmark suites): the one "shipped name or path" resolver.

A user may name a shipped file (``hillstrom``) or give a path to their own (``my_spec.yaml``). Specs and
suites resolve the same way, so both commands accept the same forms and fail with the same kind of message.
"""

from __future__ import annotations

from pathlib import Path

from msmtrec.errors import MsmtrecError


def shipped_names(folder: Path) -> list[str]:
    """Names of the ``*.yaml`` files shipped in ``folder``."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def resolve_yaml(name_or_path: str | Path, folder: Path, what: str, error: type[MsmtrecError]) -> Path:
    """A path to an existing YAML file, or the shipped ``folder/NAME.yaml``; otherwise ``error`` says which exist."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise error(f"{what} file {p} does not exist")
        return p
    shipped = folder / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise error(f"unknown {what} {str(name_or_path)!r}: not a file, and not one of the shipped {what}s "
                f"{shipped_names(folder)}")
