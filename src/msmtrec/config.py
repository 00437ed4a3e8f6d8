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

from msmtrec.errors import ConfigError, MsmtrecError

T = TypeVar("T")


# ``Optional[X]`` is a typing.Union; ``X | None`` (PEP 604) is a types.UnionType. Both come from --set.
_UNIONS = (typing.Union, types.UnionType)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def build_config(
    cls: type[T], overrides: dict[str, Any] | None, where: str = "config", error: type[MsmtrecError] = ConfigError
) -> T:
    """Instantiate dataclass ``cls`` from plain data (YAML, JSON or ``--set`` strings), checking every key.

    The one config engine of the library: model and trainer configs, dataset specs and benchmark suites all
    go through it. Nested dataclasses, ``Literal`` choices, lists (a bare name in a list of dataclasses
    stands for ``{name: ...}``), tuples, mappings and unions are checked recursively; strings from ``--set``
    are turned into numbers, booleans and comma lists. Unknown keys and wrong kinds raise ``error`` naming
    the dotted key.
    """
    return _build(cls, overrides, where, error)


def _build(cls: type, raw: Any, where: str, error: type[MsmtrecError]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise error(f"{where}: expected a mapping, got {type(raw).__name__} {raw!r}")
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise error(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known - {'origin'})}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _value(hints[k], v, f"{where}.{k}", error) for k, v in raw.items()})


def _value(tp: Any, v: Any, where: str, error: type[MsmtrecError]) -> Any:  # noqa: C901 - one branch per kind
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, v, where, error)  # type: ignore[arg-type]
    if origin is typing.Literal:
        if v not in args:
            raise error(f"{where}: expected one of {list(args)}, got {v!r}")
        return v
    if origin in _UNIONS:
        if v is None or (isinstance(v, str) and v.strip().lower() in ("none", "null") and type(None) in args):
            if type(None) in args:
                return None
        problems = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _value(a, v, where, error)
            except MsmtrecError as e:
                problems.append(str(e))
        raise error(problems[0] if len(problems) == 1 else f"{where}: expected {tp}, got {v!r}")
    if origin in (list, tuple):
        inner = args[0] if args else Any
        if isinstance(v, str):
            v = [p.strip() for p in v.strip("[]()").split(",") if p.strip()]
        if not isinstance(v, list | tuple):
            raise error(f"{where}: expected a list, got {v!r}")
        if dataclasses.is_dataclass(inner):
            v = [{"name": x} if isinstance(x, str) else x for x in v]
        return origin(_value(inner, x, f"{where}[{i}]", error) for i, x in enumerate(v))
    if origin is dict:
        if isinstance(v, str):
            return v  # "a:1,b:2" from --set: the config's own __post_init__ parses and checks it
        if not isinstance(v, dict):
            raise error(f"{where}: expected a mapping, got {v!r}")
        key_t, val_t = args or (Any, Any)
        return {_value(key_t, k, where, error): _value(val_t, x, f"{where}.{k}", error) for k, x in v.items()}
    return _scalar(tp, v, where, error)


def _scalar(tp: Any, v: Any, where: str, error: type[MsmtrecError]) -> Any:
    """Numbers, booleans and text, from their own kind or from a ``--set`` string."""
    if tp is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in _TRUE + _FALSE:
            return v.strip().lower() in _TRUE
    elif tp is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, str):
            try:
                return int(v.strip())
            except ValueError:
                pass
    elif tp is float:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v.strip())
            except ValueError:
                pass
    elif tp is str:
        if isinstance(v, str):
            return v
        if isinstance(v, int | float) and not isinstance(v, bool):
            return str(v)
    else:
        return v  # Any or a type this engine does not know: the dataclass checks it itself
    raise error(f"{where}: expected {tp.__name__}, got {v!r}")


def parse_set_options(items: list[str] | None) -> dict[str, Any]:
    """Parse ``["a=1", "model.b=x"]`` into a dict; the value stays a string until typed by a config."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out
