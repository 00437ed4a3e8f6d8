"""The service's request errors: an HTTP status and a bounded list of problems, each naming its field.

Kept free of FastAPI and pydantic so :mod:`msmtrec.serving.ranking` can raise them too.
"""

from __future__ import annotations

from typing import Any

MAX_PROBLEMS = 10
"""An error body lists at most this many problems, then says how many there were in all."""

MAX_TEXT = 300
"""Messages and location parts are cut to this many characters: a request must not be echoed back whole."""


class ServiceError(Exception):
    """A request problem that maps to an HTTP status, with the offending field's location.

    ``problems`` holds more than one problem when validation found several; ``total`` counts every problem
    found, of which the body shows the first :data:`MAX_PROBLEMS`.
    """

    def __init__(self, status: int, loc: list[str | int], msg: str, kind: str = "value_error",
                 problems: list[dict[str, Any]] | None = None, total: int | None = None) -> None:
        super().__init__(msg)
        self.status, self.loc, self.msg, self.kind = status, loc, msg, kind
        self.problems = problems if problems is not None else [{"loc": loc, "msg": msg, "type": kind}]
        self.total = len(self.problems) if total is None else total

    def body(self) -> dict[str, Any]:
        """The JSON error body: ``detail`` (first problems, clipped) and ``error_count``."""
        return {"detail": [_clip(p) for p in self.problems[:MAX_PROBLEMS]], "error_count": self.total}


def _clip(problem: dict[str, Any]) -> dict[str, Any]:
    loc = [part if not isinstance(part, str) else _cut(part) for part in problem.get("loc", [])]
    return {"loc": loc, "msg": _cut(str(problem.get("msg", ""))), "type": _cut(str(problem.get("type", "")))}


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."
