"""Atomic writes for everything in a run directory.

A run may be killed at any instant (``kill -9``, OOM killer, pre-empted node). Writing to a temporary
file in the same directory, flushing it to disk and ``os.replace``-ing it over the target means a reader
(or a resumed run) sees either the previous complete file or the new complete file, never a torn one.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
import yaml


def _atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` via a temp file + ``os.replace``."""
    _atomic(path, lambda f: torch.save(obj, f))


def save_text(text: str, path: Path) -> None:
    _atomic(path, lambda f: f.write(text.encode("utf-8")))


def save_json(obj: Any, path: Path) -> None:
    save_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", path)


def save_yaml(obj: Any, path: Path) -> None:
    save_text(yaml.safe_dump(obj, sort_keys=False), path)


def save_history_csv(history: list[dict[str, Any]], path: Path) -> None:
    """One row per epoch; the header is the union of keys in first-seen order (blank where missing)."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in keys})
    save_text(buf.getvalue(), path)
