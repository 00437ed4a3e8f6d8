"""Typed configs built from plain dicts, with errors that name the unknown key.

Models and the trainer declare their settings as dataclasses with documented defaults; users override them
from YAML files or ``--set key=value``. Unknown keys are an error rather than silently ignored, because a
typo in an ablation switch would otherwise produce a quietly wrong experiment.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from msmtrec.errors import ConfigError

T = TypeVar("T")


# ``Optional[X]`` is a typing.Union; ``X | None`` (PEP 604) is a types.UnionType. Both come from --set.
_UNIONS = (typing.Union, types.UnionType)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Turn strings from ``--set`` into the annotated type; leave other values as they are."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if (
        isinstance(value, str)
        and annotation in (int, float, bool)
        or (isinstance(value, str) and origin in _UNIONS and any(a in (int, float, bool) for a in args))
    ):
        targets = [annotation] if annotation in (int, float, bool) else [a for a in args if a is not type(None)]
        if value.lower() in ("none", "null") and type(None) in args:
            return None
        for target in targets:
            try:
                if target is bool:
                    if value.lower() in ("1", "true", "yes", "on"):
                        return True
                    if value.lower() in ("0", "false", "no", "off"):
                        return False
                    raise ValueError(value)
                return target(value)
            except ValueError:
                continue
        raise ConfigError(f"{where}: expected {annotation}, got {value!r}")
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin in (tuple, list) and isinstance(value, str):
        parts = [p for p in value.strip("[]()").split(",") if p.strip()]
        inner = args[0] if args else str
        return origin(_coerce(p.strip(), inner, where) for p in parts)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


def build_config(cls: type[T], overrides: dict[str, Any] | None, where: str = "config") -> T:
    """Instantiate dataclass ``cls`` from ``overrides``; unknown keys raise :class:`ConfigError`."""
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in overrides.items()}
    return cls(**kwargs)


def parse_set_options(items: list[str] | None) -> dict[str, Any]:
    """Parse ``["a=1", "model.b=x"]`` into a dict; the value stays a string until typed by a config."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out
