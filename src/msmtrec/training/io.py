"""Atomic writes for everything in a run directory (through :mod:`msmtrec.atomic`, the one writer)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import torch
import yaml

from msmtrec.atomic import write_atomic, write_text_atomic


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` via a temp file + ``os.replace``."""
    write_atomic(path, lambda f: torch.save(obj, f))


def save_text(text: str, path: Path) -> None:
    write_text_atomic(path, text)


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
