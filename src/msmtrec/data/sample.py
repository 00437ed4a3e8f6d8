"""Raw rows of a dataset in its spec's input layout, drawn from one split: files to try ``predict`` on.

``msmtrec data sample hillstrom --rows 100 --out rows.csv`` writes rows as the spec reads them (the feature,
label and scenario columns under their source names), so ``msmtrec predict`` and ``msmtrec evaluate --data``
take the file as it is. Rows come from the training split unless another is asked for: the test split stays
untouched by default, so nothing chosen by looking at a sample can leak into the reported test metrics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from msmtrec.data.expressions import referenced_columns
from msmtrec.data.pipeline import SPLITS, assign_splits, read_and_filter
from msmtrec.data.preprocessor import line_locator
from msmtrec.data.spec import load_spec
from msmtrec.errors import ConfigError

SUFFIXES = (".csv", ".csv.gz", ".parquet")


def sample_rows(
    spec: str | Path,
    rows: int,
    split: str = "train",
    seed: int = 0,
    labels: bool = True,
    data_root: str | Path | None = None,
    overrides: dict | None = None,
) -> pd.DataFrame:
    """``rows`` random rows of ``split`` (in file order), with the spec's input columns."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: expected one of {list(SPLITS)}")
    if rows <= 0:
        raise ConfigError(f"--rows must be positive, got {rows}")
    loaded = load_spec(spec, overrides)
    raw = read_and_filter(loaded, data_root)
    frame = raw.frame
    part = frame[assign_splits(frame, loaded, line_locator(frame, raw.files)) == split]
    if len(part) > rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(part), size=rows, replace=False))
        part = part.iloc[keep]
    columns = [c for c in part.columns if not c.startswith("__")]
    if not labels:
        label_cols = {c for t in loaded.tasks for c in referenced_columns(t.label)}
        columns = [c for c in columns if c not in label_cols]
    return part[columns].reset_index(drop=True)


def write_rows(frame: pd.DataFrame, out: str | Path) -> Path:
    """Write ``frame`` as CSV (``.csv``, ``.csv.gz``) or Parquet, by the file name."""
    out = Path(out)
    name = out.name.lower()
    if not name.endswith(SUFFIXES):
        raise ConfigError(f"--out {out}: expected a file name ending in {', '.join(SUFFIXES)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".parquet"):
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False)
    return out
