"""The one atomic file writer: a temporary file in the same folder, fsync, then ``os.replace``.

A writer may be killed at any instant (``kill -9``, the OOM killer, a pre-empted node). A reader (or a
resumed run) then sees either the previous complete file or the new complete one, never a torn one.
The temporary file is named ``.{name}.{pid}.tmp`` so :func:`msmtrec.runs.remove_stale_temporaries` can
tell a dead writer's leftovers from a live writer's file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temporary file and move it over ``path`` once it is on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))
