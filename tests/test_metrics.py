"""Metrics: exact AUC with ties (against scikit-learn), single-class cells, GAUC, the metrics layout."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from msmtrec.data.schema import Task, synthetic_schema
from msmtrec.training.metrics import (
    Predictions,
    auc,
    binary_cell,
    compute_metrics,
    format_table,
    gauc,
    monitor_value,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    y = rng.integers(0, 2, n)
    scores = rng.integers(0, 7, n).astype(np.float32) / 3.0  # few distinct values: many ties
    assert auc(y, scores) == pytest.approx(sklearn_metrics.roc_auc_score(y, scores), abs=1e-12)
    cont = rng.normal(size=n)
    assert auc(torch.from_numpy(y), torch.from_numpy(cont)) == pytest.approx(
        sklearn_metrics.roc_auc_score(y, cont), abs=1e-12
    )


def test_auc_edge_cases() -> None:
    assert auc(np.ones(5), np.arange(5.0)) is None
    assert auc(np.zeros(5), np.arange(5.0)) is None
    assert auc(np.zeros(0), np.zeros(0)) is None
    assert auc(np.array([0, 1]), np.array([0.3, 0.3])) == 0.5  # a full tie is a coin flip
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0


def _gauc_reference(y: np.ndarray, s: np.ndarray, u: np.ndarray) -> float:
    num = den = 0.0
    for user in np.unique(u):
        m = u == user
        if 0 < y[m].sum() < m.sum():
            num += sklearn_metrics.roc_auc_score(y[m], s[m]) * m.sum()
            den += m.sum()
    return num / den


def test_gauc_matches_per_user_loop() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    u = rng.integers(0, 300, n) * 7919 - 10**12  # arbitrary (negative, sparse) ids
    y = rng.integers(0, 2, n)
    s = rng.integers(0, 20, n) / 10.0 + 0.3 * y
    assert gauc(y, s, u) == pytest.approx(_gauc_reference(y, s, u), abs=1e-12)
    assert gauc(np.array([1, 1, 0]), np.array([0.1, 0.2, 0.3]), np.array([1, 1, 2])) is None


def test_gauc_is_fast_for_many_users() -> None:
    import time

    rng = np.random.default_rng(0)
    n = 500_000
    t = time.perf_counter()
    gauc(rng.integers(0, 2, n), rng.random(n), rng.integers(0, 10_000, n))
    assert time.perf_counter() - t < 5.0


def _predictions(schema, n: int, seed: int = 0, users: bool = True) -> Predictions:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    labels = np.stack(
        [rng.integers(0, 2, n).astype(np.float32) if t.type == "binary" else rng.normal(size=n).astype(np.float32)
         for t in schema.tasks],
        axis=1,
    )
    return Predictions(
        outputs={t.name: rng.normal(size=n).astype(np.float32) for t in schema.tasks},
        labels=labels,
        scenario=rng.integers(0, schema.num_scenarios, n),
        user_id=rng.integers(0, 50, n) if users else None,
    )


def test_compute_metrics_layout_and_single_class_cell() -> None:
    schema = synthetic_schema(tasks=(Task("click", "binary"), Task("gmv", "regression")), scenarios=3)
    preds = _predictions(schema, 600)
    # scenario s1 has only negatives for click -> its AUC cell is None, not an error
    preds.labels[preds.scenario == 1, 0] = 0.0
    m = compute_metrics(schema, preds)
    json.dumps(m, allow_nan=False)  # JSON-clean: no NaN, only None
    assert set(m["by_scenario"]) == {"s0", "s1", "s2"}
    cell = m["by_scenario"]["s1"]["click"]
    assert cell["auc"] is None and cell["positives"] == 0 and cell["rows"] == int((preds.scenario == 1).sum())
    for key in ("auc", "gauc", "logloss", "rows", "positives", "pred_mean", "label_mean"):
        assert key in m["overall"]["click"]
    for key in ("rmse", "mae", "rows", "pred_mean", "label_mean"):
        assert key in m["by_scenario"]["s0"]["gmv"]
    cells = [m["by_scenario"][s]["click"]["auc"] for s in ("s0", "s2")]
    assert m["mean_auc"] == pytest.approx(np.mean(cells))
    assert m["overall"]["click"]["rows"] == 600
    # overall AUC equals the direct computation; logloss matches BCE-with-logits
    y, x = preds.labels[:, 0], preds.outputs["click"]
    assert m["overall"]["click"]["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, x))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(x), torch.from_numpy(y))
    assert m["overall"]["click"]["logloss"] == pytest.approx(float(bce), rel=1e-5)
    rmse = np.sqrt(np.mean((preds.outputs["gmv"] - preds.labels[:, 1]) ** 2))
    assert m["overall"]["gmv"]["rmse"] == pytest.approx(rmse, rel=1e-6)
    table = format_table(schema, m)
    assert "s1" in table and "click AUC" in table and "gmv RMSE" in table and "overall" in table


def test_empty_scenario_nan_labels_and_no_users() -> None:
    schema = synthetic_schema(tasks=(Task("click", "binary"),), scenarios=2)
    preds = _predictions(schema, 200, users=False)
    preds.scenario[:] = 0
    preds.labels[:10, 0] = np.nan  # unknown labels are left out of the task
    m = compute_metrics(schema, preds)
    assert m["by_scenario"]["s1"]["click"] == {
        "rows": 0, "positives": 0, "auc": None, "gauc": None, "logloss": None, "pred_mean": None, "label_mean": None,
        "calibration": None, "ece": None,
    }
    assert m["overall"]["click"]["rows"] == 190 and m["overall"]["click"]["gauc"] is None
    assert m["mean_gauc"] is None and m["mean_rmse"] is None


def test_monitor_value() -> None:
    assert monitor_value({"mean_auc": 0.7}, "auto") == 0.7
    assert monitor_value({"mean_auc": None, "mean_rmse": 2.0}, "auto") == -2.0
    assert monitor_value({"mean_logloss": 0.4}, "mean_logloss") == -0.4
    assert monitor_value({"mean_auc": None}, "mean_auc") == -math.inf


def test_binary_cell_counts() -> None:
    c = binary_cell(np.array([1.0, 0.0, 1.0]), np.array([2.0, -1.0, 0.0]), np.array([5, 5, 6]))
    assert c["rows"] == 3 and c["positives"] == 2 and c["auc"] == 1.0 and c["gauc"] == 1.0
    assert c["label_mean"] == pytest.approx(2 / 3)
