"""Helpers that build a small, real run folder without the trainer (for tests, examples and benchmarks).

The folder has exactly the layout :func:`msmtrec.runs.load_run` reads (``config.yaml``, ``model.pt``,
``preprocessor.json``, ``metrics.json``), so everything downstream is exercised as with a trained run.
The weights are the seeded initialisation: predictions are meaningless but deterministic, which is all
export parity, ranking rules and service contracts need.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msmtrec import runs
from msmtrec.data.pipeline import PreparedData, prepare_dataset
from msmtrec.models.base import build_model, config_dict

SMALL_CONFIG: dict[str, Any] = {"embed_dim": 8}
"""Small enough to export and score quickly; every model accepts ``embed_dim``."""


@lru_cache(maxsize=4)
def prepared_hillstrom(sample: int | None = 10000, seed: int = 0) -> PreparedData:
    """Hillstrom prepared once per process (10,000 rows give a 1,000-row test split)."""
    return prepare_dataset("hillstrom", seed=seed, sample=sample)


def make_run_dir(
    out: str | Path,
    model: str = "shared_bottom",
    overrides: dict[str, Any] | None = None,
    prepared: PreparedData | None = None,
    seed: int = 0,
    metrics: dict[str, Any] | None = None,
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """Write a loadable run folder for ``model`` built on ``prepared`` (default: sampled Hillstrom)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prepared = prepared or prepared_hillstrom()
    torch.manual_seed(seed)
    m = build_model(model, prepared.schema, dict(SMALL_CONFIG if overrides is None else overrides))
    torch.save(m.state_dict(), out / runs.WEIGHTS)
    config = {"model_name": model, "model": config_dict(m), "data": prepared.name, "seed": seed,
              **(extra_config or {})}
    runs.write_run_start(out, config, prepared.schema, prepared.preprocessor)
    runs.write_metrics(out, metrics or {"test": {"note": "untrained weights"}})
    return out


def raw_rows(n: int = 1000, seed: int = 0) -> Any:
    """``n`` raw Hillstrom rows (feature columns + segment) as read from the shipped CSV."""
    from msmtrec.data.pipeline import read_and_filter
    from msmtrec.data.spec import load_spec

    raw = read_and_filter(load_spec("hillstrom"))
    frame = raw.frame.sample(n=n, random_state=seed)
    return frame[[c for c in frame.columns if not c.startswith("__")]].reset_index(drop=True)


def assert_same_page(a: list[dict[str, Any]], b: list[dict[str, Any]], atol: float = 1e-5) -> None:
    """Two pages from the same request agree: the same figures position by position (within ``atol``), and
    candidates trade places only where they tie within ``atol`` (two backends may order identical candidates
    differently when their scores differ in the last float bits)."""
    assert len(a) == len(b), f"pages of {len(a)} and {len(b)} items"
    for name in ("value", "worth"):
        np.testing.assert_allclose([p[name] for p in a], [p[name] for p in b], atol=atol, err_msg=name)
    assert [p["is_ad"] for p in a] == [p["is_ad"] for p in b]
    worth_a = {p["index"]: p["worth"] for p in a}
    for pa, pb in zip(a, b, strict=True):
        if pa["index"] != pb["index"] and pb["index"] in worth_a:
            assert abs(worth_a[pb["index"]] - pa["worth"]) <= atol, (
                f"position {pa['position']}: candidate {pb['index']} is not tied with {pa['index']}")
