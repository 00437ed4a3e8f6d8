"""The service encodes request values without pandas; it must give exactly the training-time transform.

One spec with every encoder kind (vocabulary, hashed, standardised, log1p, bucketised and sequence
features) is fitted on a small file; the same rows are then encoded three ways — the training path
(``Preprocessor.transform`` on a frame), request rows merged with context, and request columns — and
the batches and OOV / imputed counts must be identical.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from msmtrec.data.pipeline import prepare_dataset
from msmtrec.data.reader import SCENARIO_COL
from msmtrec.data.records import FeatureError
from msmtrec.serving.scorer import Scorer
from msmtrec.serving.testing import make_run_dir

SPEC = """name: kinds
files:
  path: {path}
scenario: {{column: scen}}
tasks:
  - {{name: click, label: click, type: binary}}
features:
  sparse:
    - {{name: cat, min_count: 2}}
    - {{name: shop, hash_buckets: 50}}
    - {{name: code}}
  dense:
    - {{name: price, transform: log1p}}
    - {{name: age}}
    - {{name: score, transform: bucketize, buckets: 4}}
  sequence:
    - {{name: hist, sep: "|", max_len: 3}}
split: {{seed: 1}}
"""
CONTEXT_COLUMNS = ("age", "shop")


def _training_frame(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "cat": rng.choice(["a", "b", "c", "rare"], n, p=[0.4, 0.3, 0.299, 0.001]),
        "shop": rng.choice([f"s{i}" for i in range(30)], n),
        "code": rng.integers(1, 6, n),
        "price": rng.exponential(20, n).round(2),
        "age": rng.integers(18, 70, n).astype(float),
        "score": rng.normal(size=n).round(3),
        "hist": ["|".join(rng.choice(list("pqrst"), rng.integers(0, 5))) for _ in range(n)],
        "scen": rng.choice(["home", "search"], n),
        "click": rng.integers(0, 2, n),
    })


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> Scorer:
    root = tmp_path_factory.mktemp("kinds")
    _training_frame().to_csv(root / "d.csv", index=False)
    (root / "s.yaml").write_text(SPEC.format(path=root / "d.csv"))
    prepared = prepare_dataset(root / "s.yaml")
    return Scorer.load(make_run_dir(root / "run", "shared_bottom", prepared=prepared))


def _request_rows() -> list[dict[str, Any]]:
    """Rows as a client sends them: unseen and rare categories, nulls, numbers as strings, 3.0 for 3,
    lists for the sequence, a NaN-free mix of ints and floats."""
    return [
        {"cat": "a", "code": 3, "price": 10.5, "score": 0.2, "hist": ["p", "q", "r", "s"]},
        {"cat": "unseen", "code": 3.0, "price": None, "score": None, "hist": "q|t"},
        {"cat": None, "code": "4", "price": "7.25", "score": -1.5, "hist": []},
        {"cat": "rare", "code": 99, "price": 0, "score": 3, "hist": None},
        {"cat": "b", "code": 1, "price": 1e6, "score": 0.0, "hist": ["zz", "p"]},
    ]


def _as_training_frame(rows: list[dict[str, Any]], context: dict[str, Any], scenario: str) -> pd.DataFrame:
    """The same rows as the training reader would hold them (text categories, joined sequences)."""
    frame = pd.DataFrame([{**context, **r} for r in rows])
    frame["code"] = [str(int(float(v))) for v in frame["code"]]
    frame["hist"] = ["|".join(v) if isinstance(v, list) else v for v in frame["hist"]]
    frame["price"] = pd.to_numeric(frame["price"])
    frame[SCENARIO_COL] = scenario
    return frame


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_request_encoding_matches_the_training_transform(scorer: Scorer) -> None:
    rows = _request_rows()
    context = {"age": 33, "shop": "s7"}
    want, want_report = scorer.pre.transform(_as_training_frame(rows, context, "search"), with_labels=False)
    got, report = scorer.encoder.encode_records("search", rows, context, "candidates")
    _assert_same({k: v for k, v in want.items() if k in got}, got)
    assert report.oov == want_report.oov and report.imputed == want_report.imputed
    assert report.oov["cat"] == 2  # "unseen" and the rare value (min_count 2); the null is not OOV
    assert report.oov["hist"] == 1  # "zz"; every other item is in the training vocabulary
    assert report.imputed["price"] == 1 and report.imputed["score"] == 1

    columns = {k: [r[k] for r in rows] for k in rows[0]}
    got_cols, report_cols = scorer.encoder.encode_columns("search", columns, len(rows), context)
    _assert_same(got, got_cols)
    assert report_cols.oov == report.oov and report_cols.imputed == report.imputed


def test_a_row_value_wins_over_the_context(scorer: Scorer) -> None:
    rows = _request_rows()
    rows[1] = {**rows[1], "age": 80}
    context = {"age": 33, "shop": "s7"}
    want, _ = scorer.pre.transform(_as_training_frame(rows, context, "home"), with_labels=False)
    got, _ = scorer.encoder.encode_records("home", rows, context)
    _assert_same({k: v for k, v in want.items() if k in got}, got)
    assert got["scenario"].tolist() == [scorer.pre.scenarios.index("home")] * len(rows)


def test_an_unseen_context_value_counts_once_per_row(scorer: Scorer) -> None:
    rows = _request_rows()
    _, report = scorer.encoder.encode_records("home", rows, {"age": 33, "shop": None})
    assert report.oov["shop"] == 0  # null is a missing value, not OOV; hashed features have no OOV
    _, report = scorer.encoder.encode_records("home", rows, {"age": None, "shop": "s7"})
    assert report.imputed["age"] == len(rows)


def test_request_errors_name_the_feature_and_row(scorer: Scorer) -> None:
    rows = _request_rows()
    with pytest.raises(FeatureError, match="missing required feature 'age'") as e:
        scorer.encoder.encode_records("home", rows, {"shop": "s1"}, "candidates")
    assert (e.value.what, e.value.index, e.value.column) == ("candidates", 0, "age")
    bad = [dict(r) for r in rows]
    bad[3]["price"] = "cheap"
    with pytest.raises(FeatureError, match="got 'cheap'") as e:
        scorer.encoder.encode_records("home", bad, {"age": 1, "shop": "s1"}, "candidates")
    assert (e.value.what, e.value.index, e.value.column) == ("candidates", 3, "price")
    with pytest.raises(FeatureError) as e:
        scorer.encoder.encode_records("home", rows, {"age": "old", "shop": "s1"}, "candidates")
    assert (e.value.what, e.value.index, e.value.column) == ("context", None, "age")
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    with pytest.raises(FeatureError, match="has 4 values, expected 5") as e:
        scorer.encoder.encode_columns("home", {**columns, "cat": columns["cat"][:4]}, 5, {"age": 1, "shop": "s1"})
    assert e.value.column == "cat"
    with pytest.raises(FeatureError, match="missing required feature 'shop'"):
        scorer.encoder.encode_columns("home", columns, 5, {"age": 1})
