"""The HTTP service contract: endpoints, ranking through the API, and a status for every bad request."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from msmtrec.data.reader import SCENARIO_COL
from msmtrec.serving.app import Limits, create_app
from msmtrec.serving.scorer import Scorer
from msmtrec.serving.testing import assert_same_page, make_run_dir

CONTEXT = {"recency": 3, "history": 120.5, "zip_code": "Urban", "newbie": 1, "channel": "Web"}
SEGMENTS = ["1) $0 - $100", "2) $100 - $200", "3) $200 - $350", "4) $350 - $500"]


def _candidates(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"item{i}", "features": {"history_segment": SEGMENTS[i % 4], "mens": i % 2, "womens": (i // 2) % 2}}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> Scorer:
    run = make_run_dir(tmp_path_factory.mktemp("run") / "hef", "shared_bottom",
                       metrics={"test": {"visit": {"auc": 0.6}}})
    return Scorer.load(run)


@pytest.fixture(scope="module")
def client(scorer: Scorer) -> TestClient:
    return TestClient(create_app(scorer, Limits(max_body_bytes=200_000, max_candidates=500, max_records=50)))


def _detail(r: Any) -> list[dict[str, Any]]:
    return r.json()["detail"]


def test_health_and_model(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/v1/model").json()
    assert info["model"] == "shared_bottom"
    assert info["scenarios"] == ["Mens E-Mail", "No E-Mail", "Womens E-Mail"]
    assert [t["name"] for t in info["tasks"]] == ["visit", "conversion", "spend"]
    assert "zip_code" in info["features"]["required"]
    assert info["metrics"] == {"test": {"visit": {"auc": 0.6}}}
    assert len(info["version"]) == 12


def test_openapi_schema_lists_endpoints(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/v1/score", "/v1/rank", "/v1/model", "/health"} <= set(schema["paths"])
    body = schema["paths"]["/v1/rank"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/RankRequest"}
    refs = {r.rsplit("/", 1)[-1] for r in re.findall(r'"\$ref": "([^"]+)"', json.dumps(schema))}
    assert refs <= set(schema["components"]["schemas"]), refs - set(schema["components"]["schemas"])


def test_score_matches_batch_scoring(client: TestClient, scorer: Scorer) -> None:
    records = [{**CONTEXT, **c["features"]} for c in _candidates(5)]
    r = client.post("/v1/score", json={"scenario": "Mens E-Mail", "records": records})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 5 and set(preds[0]) == {"visit", "conversion", "spend"}
    assert all(0.0 < p["visit"] < 1.0 for p in preds)
    frame = pd.DataFrame(records).assign(**{SCENARIO_COL: "Mens E-Mail"})  # the training-time transform
    expected = scorer.score_frame(frame).predictions
    np.testing.assert_allclose([p["visit"] for p in preds], expected["visit"], rtol=1e-6)


def test_rank_returns_a_page(client: TestClient) -> None:
    body = {"scenario": "Womens E-Mail", "context": CONTEXT, "candidates": _candidates(100),
            "slots": {"positions": 10}}
    r = client.post("/v1/rank", json=body)
    assert r.status_code == 200, r.text
    page = r.json()["page"]
    assert [p["position"] for p in page] == list(range(1, 11))
    values = [p["value"] for p in page]
    assert values == sorted(values, reverse=True)
    assert r.json()["objective"]["weights"] == {"visit": 1.0, "conversion": 1.0}
    assert page[0]["id"].startswith("item")


def test_rank_order_follows_objective_with_fake_predictions(scorer: Scorer, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {"visit": np.array([0.9, 0.5, 0.1, 0.3]), "conversion": np.array([0.01, 0.10, 0.05, 0.02]),
            "spend": np.array([1.0, 2.0, 30.0, 4.0])}
    monkeypatch.setattr(scorer, "outputs", lambda batch: fake)
    client = TestClient(create_app(scorer))
    body = {"scenario": "Mens E-Mail", "context": CONTEXT, "candidates": _candidates(4), "slots": {"positions": 4}}

    def order(objective: dict[str, Any], **extra: Any) -> list[int]:
        r = client.post("/v1/rank", json={**body, "objective": objective, **extra})
        assert r.status_code == 200, r.text
        return [p["index"] for p in r.json()["page"]]

    assert order({"weights": {"visit": 1.0}}) == [0, 1, 3, 2]
    assert order({"weights": {"conversion": 1.0}}) == [1, 2, 3, 0]
    assert order({"weights": {"spend": 1.0}}) == [2, 3, 1, 0]
    # a visit worth 1, a conversion worth 20: 1.1, 2.5, 1.1, 0.7 (ties keep request order)
    assert order({"weights": {"visit": 1.0, "conversion": 20.0}}) == [1, 0, 2, 3]

    # ads: item 3 is a cpc ad bidding 5 -> revenue 0.3 x 5 = 1.5, worth 1.8; allowed only at position 2
    cands = _candidates(4)
    cands[3] = {**cands[3], "is_ad": True, "bid": 5.0}
    page = client.post("/v1/rank", json={**body, "candidates": cands, "objective": {"weights": {"visit": 1.0}},
                                         "slots": {"positions": 3, "max_ads": 1, "ad_positions": [2]}}).json()["page"]
    assert [(p["index"], p["is_ad"]) for p in page] == [(0, False), (3, True), (1, False)]
    assert page[1]["revenue"] == pytest.approx(1.5)
    # a cpa bid pays per conversion: 0.02 x 5 = 0.1, worth 0.4 < 0.5 of item 1 -> the ad is not shown
    cands[3]["bid_type"] = "cpa"
    page = client.post("/v1/rank", json={**body, "candidates": cands, "objective": {"weights": {"visit": 1.0}},
                                         "slots": {"positions": 3, "max_ads": 1, "ad_positions": [2]}}).json()["page"]
    assert [p["index"] for p in page] == [0, 1, 2]


def test_rank_explain_returns_weights(client: TestClient) -> None:
    body = {"scenario": "No E-Mail", "context": CONTEXT, "candidates": _candidates(6),
            "slots": {"positions": 3}, "explain": True}
    r = client.post("/v1/rank", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["explain_fields"][0] == "history_segment"
    for item in out["page"]:
        assert isinstance(item["explain"], dict)  # empty for models without attention or gates


def test_explain_lists_floats_for_gated_models(tmp_path: Path) -> None:
    from msmtrec.models import registered_models

    name = next((m for m in ("hef", "mmoe", "ple") if m in registered_models()), None)
    if name is None:
        pytest.skip("no gated model registered")
    client = TestClient(create_app(Scorer.load(make_run_dir(tmp_path / name, name))))
    body = {"scenario": "No E-Mail", "context": CONTEXT, "candidates": _candidates(6),
            "slots": {"positions": 2}, "explain": True}
    r = client.post("/v1/rank", json=body)
    assert r.status_code == 200, r.text
    weights = r.json()["page"][0]["explain"]
    assert weights, f"{name}.explain returned nothing"
    first = next(iter(weights.values()))
    assert isinstance(first, list) and isinstance(np.asarray(first).ravel()[0].item(), float)


# ------------------------------------------------------------------------------------------ bad requests


def _rank(client: TestClient, **changes: Any) -> Any:
    body = {"scenario": "Mens E-Mail", "context": dict(CONTEXT), "candidates": _candidates(3)}
    body.update(changes)
    return client.post("/v1/rank", json=body)


def test_unknown_scenario_is_422_naming_it(client: TestClient) -> None:
    r = _rank(client, scenario="Kids E-Mail")
    assert r.status_code == 422
    assert _detail(r)[0]["loc"] == ["body", "scenario"] and "Kids E-Mail" in _detail(r)[0]["msg"]
    r = client.post("/v1/score", json={"scenario": "Kids E-Mail", "records": [CONTEXT]})
    assert r.status_code == 422 and "Kids E-Mail" in r.text


def test_missing_feature_is_422_naming_it(client: TestClient) -> None:
    ctx = {k: v for k, v in CONTEXT.items() if k != "zip_code"}
    r = _rank(client, context=ctx)
    assert r.status_code == 422
    assert _detail(r)[0]["loc"] == ["body", "candidates", 0, "features", "zip_code"]
    r = client.post("/v1/score", json={"scenario": "Mens E-Mail", "records": [ctx]})
    assert r.status_code == 422 and _detail(r)[0]["loc"][-1] == "history_segment"


def test_wrong_type_is_422_naming_the_field(client: TestClient) -> None:
    r = _rank(client, context={**CONTEXT, "recency": "three"})
    assert r.status_code == 422
    assert _detail(r)[0]["loc"] == ["body", "context", "recency"]
    cands = _candidates(3)
    for i, c in enumerate(cands):
        c["features"]["history"] = "lots" if i == 1 else "12.5"  # numeric strings are fine
    r = _rank(client, candidates=cands, context={k: v for k, v in CONTEXT.items() if k != "history"})
    assert r.status_code == 422 and _detail(r)[0]["loc"] == ["body", "candidates", 1, "features", "history"]
    r = _rank(client, candidates="not a list")
    assert r.status_code == 422 and _detail(r)[0]["loc"] == ["body", "candidates"]
    r = _rank(client, context={**CONTEXT, "zip_code": {"nested": 1}})
    assert r.status_code == 422 and _detail(r)[0]["loc"] == ["body", "context", "zip_code"]
    r = _rank(client, slots={"positions": "ten"})
    assert r.status_code == 422 and _detail(r)[0]["loc"] == ["body", "slots", "positions"]
    r = _rank(client, objective={"weights": {"clicks": 1.0}})
    assert r.status_code == 422 and _detail(r)[0]["loc"] == ["body", "objective", "weights", "clicks"]
    cands = _candidates(3)
    cands[2]["is_ad"] = True
    r = _rank(client, candidates=cands)
    assert r.status_code == 422 and _detail(r)[0]["loc"][:3] == ["body", "candidates", 2]


def test_nan_is_422(client: TestClient) -> None:
    body = {"scenario": "Mens E-Mail", "context": {**CONTEXT, "history": float("nan")}, "candidates": _candidates(2)}
    r = client.post("/v1/rank", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert _detail(r)[0]["loc"] == ["body", "context", "history"] and "finite" in _detail(r)[0]["msg"]
    body = {"scenario": "Mens E-Mail", "context": CONTEXT, "candidates": _candidates(2),
            "objective": {"weights": {"visit": float("inf")}}}
    r = client.post("/v1/rank", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_malformed_json_is_422(client: TestClient) -> None:
    r = client.post("/v1/rank", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_oversized_requests_are_413(client: TestClient) -> None:
    r = _rank(client, candidates=_candidates(501))
    assert r.status_code == 413 and _detail(r)[0]["loc"] == ["body", "candidates"]
    r = client.post("/v1/score", json={"scenario": "Mens E-Mail", "records": [CONTEXT] * 51})
    assert r.status_code == 413
    big = b'{"scenario": "Mens E-Mail", "pad": "' + b"x" * 300_000 + b'"}'
    r = client.post("/v1/rank", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413

    def chunks() -> Any:  # no content-length: the limit is enforced on the stream
        for _ in range(40):
            yield b"x" * 10_000

    r = client.post("/v1/rank", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.get("/health").status_code == 200


def test_unseen_category_goes_to_oov_and_is_counted(client: TestClient) -> None:
    r = _rank(client, context={**CONTEXT, "channel": "Carrier pigeon"})
    assert r.status_code == 200, r.text
    assert r.json()["oov"] == {"channel": 3}


def test_null_means_missing_value(client: TestClient) -> None:
    r = _rank(client, context={**CONTEXT, "recency": None, "zip_code": None})
    assert r.status_code == 200, r.text


def test_internal_errors_do_not_crash_the_service(scorer: Scorer, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(batch: Any) -> Any:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(scorer, "outputs", boom)
    client = TestClient(create_app(scorer), raise_server_exceptions=False)
    r = _rank(client)
    assert r.status_code == 500 and "kaboom" in r.text
    assert client.get("/health").status_code == 200


def test_onnx_backend_matches_torch(scorer: Scorer, tmp_path: Path) -> None:
    onnx_scorer = Scorer(scorer.run)
    onnx_scorer.use_onnx()
    assert onnx_scorer.backend == "onnx"
    body = {"scenario": "Mens E-Mail", "context": CONTEXT, "candidates": _candidates(50), "slots": {"positions": 50}}
    a = TestClient(create_app(scorer)).post("/v1/rank", json=body).json()["page"]
    b = TestClient(create_app(onnx_scorer)).post("/v1/rank", json=body).json()["page"]
    assert_same_page(a, b, atol=1e-5)  # 50 candidates, 16 distinct: ties may swap between backends


def test_onnx_backend_refuses_a_foreign_export(scorer: Scorer, tmp_path: Path) -> None:
    from msmtrec.errors import DataError
    from msmtrec.serving.export import export_onnx

    other = Scorer.load(make_run_dir(tmp_path / "other", "shared_bottom", seed=7))
    path = export_onnx(other.model, tmp_path / "other.onnx")
    with pytest.raises(DataError, match="differ"):
        Scorer(scorer.run).use_onnx(path)


# ------------------------------------------------------------------------------- candidate columns


def _columns(cands: list[dict[str, Any]]) -> dict[str, Any]:
    """The same candidates as candidate_columns (one list per field)."""
    names = list(cands[0]["features"])
    cols: dict[str, Any] = {"id": [c.get("id") for c in cands],
                            "features": {k: [c["features"][k] for c in cands] for k in names}}
    for key in ("is_ad", "bid", "bid_type", "price"):
        if any(key in c for c in cands):
            default = {"is_ad": False, "bid_type": "cpc"}.get(key)
            cols[key] = [c.get(key, default) for c in cands]
    return cols


def test_candidate_columns_give_the_same_page_as_candidate_objects(client: TestClient) -> None:
    cands = _candidates(60)
    for i in (4, 9, 20):
        cands[i].update(is_ad=True, bid=1000.0 + i, bid_type="cpa" if i == 9 else "cpc")
    for i, c in enumerate(cands):
        c["price"] = 10.0 + i
    cands[7]["features"]["history_segment"] = "never seen"
    common = {"scenario": "Womens E-Mail", "context": CONTEXT, "slots": {"positions": 12, "max_ads": 2},
              "objective": {"weights": {"visit": 1.0, "conversion": 5.0}, "price_tasks": ["conversion"]}}
    rows = client.post("/v1/rank", json={**common, "candidates": cands})
    cols = client.post("/v1/rank", json={**common, "candidate_columns": _columns(cands)})
    assert rows.status_code == 200 and cols.status_code == 200, cols.text
    assert cols.json() == rows.json()
    assert any(p["is_ad"] for p in cols.json()["page"]) and cols.json()["oov"] == {"history_segment": 1}


def test_candidate_columns_may_leave_features_to_the_context(client: TestClient) -> None:
    """A feature in the columns wins over the context; the rest come from the context."""
    cands = _candidates(5)
    cols = _columns(cands)
    cols["features"]["zip_code"] = ["Rural"] * 5
    r = client.post("/v1/rank", json={"scenario": "Mens E-Mail", "context": CONTEXT, "candidate_columns": cols})
    want = client.post("/v1/rank", json={"scenario": "Mens E-Mail", "context": CONTEXT, "candidates": [
        {**c, "features": {**c["features"], "zip_code": "Rural"}} for c in cands]})
    assert r.status_code == 200, r.text
    assert r.json() == want.json()


def test_candidate_columns_bad_requests_name_the_field(client: TestClient) -> None:
    cols = _columns(_candidates(4))
    body = {"scenario": "Mens E-Mail", "context": CONTEXT}

    def post(**changes: Any) -> Any:
        return client.post("/v1/rank", content=json.dumps({**body, **changes}),
                           headers={"content-type": "application/json"})

    r = post()
    assert r.status_code == 422 and "exactly one" in _detail(r)[0]["msg"]
    r = post(candidates=_candidates(4), candidate_columns=cols)
    assert r.status_code == 422 and "exactly one" in _detail(r)[0]["msg"]
    r = post(candidate_columns={**cols, "id": cols["id"][:3]})
    assert r.status_code == 422 and "'id' has 3 entries, the others 4" in _detail(r)[0]["msg"]
    assert _detail(r)[0]["loc"] == ["body", "candidate_columns"]
    r = post(candidate_columns={"features": {}})
    assert r.status_code == 422 and "no columns" in _detail(r)[0]["msg"]
    r = post(candidate_columns={"id": []})
    assert r.status_code == 422 and "no candidates" in _detail(r)[0]["msg"]
    r = post(candidate_columns=cols, context={k: v for k, v in CONTEXT.items() if k != "zip_code"})
    assert r.status_code == 422 and _detail(r)[0]["loc"] == ["body", "candidate_columns", "features", "zip_code"]
    bad = {**cols, "features": {**cols["features"], "history": [1.0, "lots", 2.0, 3.0]}}
    r = post(candidate_columns=bad)
    assert r.status_code == 422 and _detail(r)[0]["loc"] == ["body", "candidate_columns", "features", "history", 1]
    bad = {**cols, "features": {**cols["features"], "history": [1.0, float("nan"), 2.0, 3.0]}}
    r = post(candidate_columns=bad)
    assert r.status_code == 422 and _detail(r)[0]["loc"][:4] == ["body", "candidate_columns", "features", "history"]
    r = post(candidate_columns={**cols, "is_ad": [False, True, False, False]})
    assert r.status_code == 422 and _detail(r)[0]["loc"] == ["body", "candidate_columns", "bid", 1]
    r = post(candidate_columns={**cols, "bid": [None, -1.0, None, None]})
    assert r.status_code == 422 and _detail(r)[0]["loc"][:4] == ["body", "candidate_columns", "bid", 1]
    r = post(candidate_columns={**cols, "bid_type": ["cpc", "cpm", "cpc", "cpc"]})
    assert r.status_code == 422 and _detail(r)[0]["loc"][:4] == ["body", "candidate_columns", "bid_type", 1]
    r = post(candidate_columns=_columns(_candidates(501)))
    assert r.status_code == 413 and _detail(r)[0]["loc"] == ["body", "candidate_columns"]


# ------------------------------------------------------------------------------- one descent, named steps


def test_the_rank_steps_are_functions_that_give_the_routes_answer(client: TestClient, scorer: Scorer) -> None:
    """body → request → plan → batch → scores → page → bytes, each step callable without HTTP."""
    from msmtrec.serving import app as service_app
    from msmtrec.serving.schemas import RankRequest, read_request

    service = service_app.Service.load(scorer, client.app.state.limits)
    body = json.dumps({"scenario": "Womens E-Mail", "context": CONTEXT, "candidates": _candidates(30),
                       "slots": {"positions": 5}}).encode()
    req = read_request(body, "application/json", RankRequest, service.limits)
    plan = service_app.plan_rank(service, req)
    assert plan.scenario == scorer.encoder.scenarios.index("Womens E-Mail") and plan.rows == 30
    batch, report = service_app.encode_rank(service, req, plan)
    preds = service_app.score_batch(service, batch, ["body", plan.form])
    page = service_app.rank_page(plan, preds)
    out = json.loads(service_app.rank_response(service, req, plan, page, preds, report, batch))
    whole, timing = service_app.rank(service, body)
    assert json.loads(whole) == out == client.post("/v1/rank", content=body).json()
    assert timing.model > 0 and "model;dur=" in timing.header()
    assert service_app.rank_route.__module__ == "msmtrec.serving.app"  # routes are module-level, not closures


def test_scenario_names_have_one_owner(scorer: Scorer) -> None:
    names = scorer.encoder.scenarios
    assert names is not None and list(names.display) == list(scorer.schema.scenarios)
    for i, (value, display) in enumerate(zip(names.values, names.display, strict=True)):
        assert names.index(value) == names.index(display) == i
    with pytest.raises(Exception, match="never seen in training"):
        names.index(True)
