"""The service under hostile input: bounded cost, precise 4xx for every class of bad body, no 5xx, no
traceback, no silently changed value (property-based with Hypothesis), and work kept off the event loop."""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msmtrec.data.records import FeatureError
from msmtrec.serving.app import Limits, create_app
from msmtrec.serving.schemas import OutOfRange, parse_json
from msmtrec.serving.scorer import Scorer
from msmtrec.serving.testing import make_run_dir

CONTEXT = {"recency": 3, "history": 120.5, "zip_code": "Urban", "newbie": 1, "channel": "Web"}
SEGMENTS = ["1) $0 - $100", "2) $100 - $200", "3) $200 - $350", "4) $350 - $500"]
JSON = {"content-type": "application/json"}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _candidates(n: int) -> list[dict[str, Any]]:
    return [{"id": f"item{i}", "features": {"history_segment": SEGMENTS[i % 4], "mens": i % 2, "womens": 1 - i % 2}}
            for i in range(n)]


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> Scorer:
    return Scorer.load(make_run_dir(tmp_path_factory.mktemp("run") / "sb", "shared_bottom"))


@pytest.fixture(scope="module")
def client(scorer: Scorer) -> TestClient:
    limits = Limits(max_body_bytes=2_000_000, max_candidates=500, max_records=50, max_fields=100,
                    max_values=1_000_000)
    return TestClient(create_app(scorer, limits), raise_server_exceptions=False)


def _post(client: TestClient, body: Any, path: str = "/v1/rank", headers: dict[str, str] | None = None) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, headers=headers or JSON)


def _rank_body(**changes: Any) -> dict[str, Any]:
    return {"scenario": "Mens E-Mail", "context": dict(CONTEXT), "candidates": _candidates(3), **changes}


def _first(r: Any) -> dict[str, Any]:
    return r.json()["detail"][0]


# ------------------------------------------------------------------------- each class of bad body, named


def test_a_huge_integer_is_422_naming_the_field_never_rounded(client: TestClient) -> None:
    digits = "9" * 30
    raw = json.dumps(_rank_body()).replace('"recency": 3', f'"recency": {digits}').encode()
    r = _post(client, raw)
    assert r.status_code == 422, r.text
    assert _first(r)["loc"] == ["body", "context", "recency"] and "64-bit" in _first(r)["msg"]
    raw = json.dumps(_rank_body()).replace('"id": "item1"', f'"id": {digits}').encode()
    r = _post(client, raw)
    assert r.status_code == 422 and _first(r)["loc"] == ["body", "candidates", 1, "id"], r.text
    assert "64-bit" in _first(r)["msg"]
    r = _post(client, raw.replace(digits.encode(), b"9" * 5000))  # more digits than int() parses by default
    assert r.status_code == 422 and _first(r)["loc"] == ["body", "candidates", 1, "id"], r.text
    # within the 64-bit range an integer id comes back exactly (orjson would keep it too)
    big = 2**64 - 1
    r = _post(client, json.dumps(_rank_body()).replace('"id": "item1"', f'"id": {big}').encode())
    assert r.status_code == 200 and big in [p.get("id") for p in r.json()["page"]]


def test_true_is_not_a_number(client: TestClient) -> None:
    r = _post(client, _rank_body(context={**CONTEXT, "recency": True}))
    assert r.status_code == 422 and _first(r)["loc"] == ["body", "context", "recency"], r.text
    assert "got true" in _first(r)["msg"]
    cands = _candidates(3)
    cands[1].update(is_ad=True, bid=True)
    r = _post(client, _rank_body(candidates=cands))
    assert r.status_code == 422 and _first(r)["loc"] == ["body", "candidates", 1, "bid"], r.text
    r = _post(client, _rank_body(slots={"positions": True}))
    assert r.status_code == 422 and _first(r)["loc"] == ["body", "slots", "positions"], r.text
    r = _post(client, _rank_body(objective={"weights": {"visit": True}}))
    assert r.status_code == 422 and _first(r)["loc"] == ["body", "objective", "weights", "visit"], r.text
    r = _post(client, _rank_body(candidates=[{**c, "is_ad": 1} for c in _candidates(2)]))
    assert r.status_code == 422 and _first(r)["loc"] == ["body", "candidates", 0, "is_ad"], r.text


def test_a_list_is_not_a_categorical_value(client: TestClient) -> None:
    r = _post(client, _rank_body(context={**CONTEXT, "zip_code": [1, 2]}))
    assert r.status_code == 422 and _first(r)["loc"] == ["body", "context", "zip_code"], r.text
    assert "list" in _first(r)["msg"]
    cands = _candidates(3)
    cands[2]["features"]["history_segment"] = ["1) $0 - $100"]
    r = _post(client, _rank_body(candidates=cands))
    assert r.status_code == 422 and _first(r)["loc"] == ["body", "candidates", 2, "features", "history_segment"]
    r = _post(client, _rank_body(context={**CONTEXT, "history": [1.5]}))
    assert r.status_code == 422 and _first(r)["loc"] == ["body", "context", "history"], r.text


def test_a_body_that_is_not_utf8_is_400_naming_the_byte(client: TestClient) -> None:
    raw = json.dumps(_rank_body()).encode().replace(b"Urban", b"Urb\xffan")
    r = _post(client, raw)
    assert r.status_code == 400, r.text
    offset = raw.index(b"\xff")
    assert "UTF-8" in _first(r)["msg"] and f"0xff at offset {offset}" in _first(r)["msg"]
    r = _post(client, json.dumps(_rank_body()).encode().replace(b"Urban", b"\\ud800"))
    assert r.status_code == 400 and "surrogate" in _first(r)["msg"], r.text


def test_a_wrong_content_type_is_415_naming_it(client: TestClient) -> None:
    r = _post(client, _rank_body(), headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "'text/plain'" in _first(r)["msg"] and "application/json" in _first(r)["msg"]
    r = _post(client, _rank_body(), headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "content type" in _first(r)["msg"]
    r = _post(client, _rank_body(), headers={"content-type": "application/json; charset=latin-1"})
    assert r.status_code == 415 and "latin-1" in _first(r)["msg"]
    assert _post(client, _rank_body(), headers={"content-type": "application/json; charset=utf-8"}).status_code == 200


def test_malformed_json_names_line_and_column(client: TestClient) -> None:
    r = _post(client, b'{"scenario": "Mens E-Mail",\n "context": {"a": 1,}}')
    assert r.status_code == 422 and "line 2 column" in _first(r)["msg"], r.text
    r = _post(client, b"[" * 100_000)  # nested too deeply for any parser: still a 4xx, in one line
    assert r.status_code == 422, r.text


# ----------------------------------------------------------------------------------- bounded request cost


def test_many_unknown_keys_give_a_small_error_body_with_a_count(client: TestClient) -> None:
    body = {**_rank_body(), **{f"junk{i}": i for i in range(50_000)}}
    r = _post(client, body)
    assert r.status_code == 422
    out = r.json()
    assert out["error_count"] == 50_000 and len(out["detail"]) == 10 and len(r.content) < 5_000
    cands = _candidates(3)
    cands[0].update({f"junk{i}": i for i in range(50_000)})
    r = _post(client, _rank_body(candidates=cands))
    assert r.status_code == 422 and len(r.content) < 5_000 and "50000 unknown" in _first(r)["msg"]


def test_too_many_features_or_records_is_413(client: TestClient) -> None:
    r = _post(client, _rank_body(context={**CONTEXT, **{f"f{i}": i for i in range(200)}}))
    assert r.status_code == 413 and _first(r)["loc"] == ["body", "context"], r.text
    cands = _candidates(3)
    cands[1]["features"].update({f"f{i}": i for i in range(200)})
    r = _post(client, _rank_body(candidates=cands))
    assert r.status_code == 413 and _first(r)["loc"] == ["body", "candidates", 1, "features"], r.text
    r = _post(client, {"scenario": "Mens E-Mail", "records": [{f"f{i}": i for i in range(200)}]}, "/v1/score")
    assert r.status_code == 413 and _first(r)["loc"] == ["body", "records", 0], r.text
    cols = {"id": list(range(501)), "features": {"mens": [1] * 501}}
    r = _post(client, {"scenario": "Mens E-Mail", "context": CONTEXT, "candidate_columns": cols})
    assert r.status_code == 413 and _first(r)["loc"] == ["body", "candidate_columns"], r.text
    r = _post(client, _rank_body(objective={"weights": {f"t{i}": 1.0 for i in range(200)}}))
    assert r.status_code == 413 and _first(r)["loc"] == ["body", "objective", "weights"], r.text


def test_too_many_json_values_is_413_before_parsing(scorer: Scorer) -> None:
    client = TestClient(create_app(scorer, Limits(max_values=1000)))
    r = _post(client, _rank_body(context={**CONTEXT, "seq": list(range(2000))}))
    assert r.status_code == 413 and "JSON values; the limit is 1000" in _first(r)["msg"], r.text
    assert _post(client, _rank_body()).status_code == 200


def test_long_candidate_lists_are_checked_in_chunks_and_located_exactly(client: TestClient) -> None:
    cands = _candidates(400)
    cands[300]["bid"] = "high"
    cands[301]["is_ad"] = "yes"
    r = _post(client, _rank_body(candidates=cands))
    assert r.status_code == 422, r.text
    assert [p["loc"] for p in r.json()["detail"]] == [["body", "candidates", 300, "bid"],
                                                     ["body", "candidates", 301, "is_ad"]]
    cols = {"id": list(range(400)), "bid": [None] * 400, "features": {"mens": [1] * 400}}
    cols["bid"][299] = True
    r = _post(client, {"scenario": "Mens E-Mail", "context": {**CONTEXT, "history_segment": SEGMENTS[0],
                                                              "womens": 0}, "candidate_columns": cols})
    assert r.status_code == 422 and _first(r)["loc"] == ["body", "candidate_columns", "bid", 299], r.text


def test_error_bodies_never_echo_a_huge_value(client: TestClient) -> None:
    r = _post(client, _rank_body(scenario="x" * 500_000))
    assert r.status_code == 422 and len(r.content) < 2_000, len(r.content)


def test_overflowing_figures_are_422_not_nulls(client: TestClient) -> None:
    cands = [{**c, "price": 1e308} for c in _candidates(3)]
    r = _post(client, _rank_body(candidates=cands, objective={"weights": {"visit": 1e308, "conversion": 1e308},
                                                              "price_tasks": ["visit"]}))
    assert r.status_code == 422 and _first(r)["loc"] == ["body", "objective"], r.text


def test_requests_are_handled_off_the_event_loop(scorer: Scorer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing and scoring run in a worker thread, so the loop (and /health) never waits for them."""
    seen: list[str] = []
    original = scorer.outputs

    def spy(batch: Any) -> Any:
        seen.append(threading.current_thread().name)
        return original(batch)

    monkeypatch.setattr(scorer, "outputs", spy)
    with TestClient(create_app(scorer)) as client:
        loop_thread = client.portal.call(lambda: threading.current_thread().name)
        assert _post(client, _rank_body()).status_code == 200
    assert seen and seen[0] != loop_thread


def test_a_full_queue_is_503(scorer: Scorer) -> None:
    client = TestClient(create_app(scorer, Limits(max_pending=0)))
    r = _post(client, _rank_body())
    assert r.status_code == 503 and "busy" in _first(r)["msg"]
    assert client.get("/health").status_code == 200


def test_ties_keep_request_order(scorer: Scorer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Identical candidates score identically in one call; the page keeps them in request order."""
    client = TestClient(create_app(scorer))
    cands = [{"id": i, "features": {"history_segment": SEGMENTS[0], "mens": 1, "womens": 0}} for i in range(12)]
    page = _post(client, _rank_body(candidates=cands, slots={"positions": 12})).json()["page"]
    assert [p["id"] for p in page] == list(range(12))


# -------------------------------------------------------------------------- property-based: random JSON

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
RANK_PATHS = [("scenario",), ("context", "recency"), ("context", "zip_code"), ("context",), ("candidates",),
              ("candidates", 0), ("candidates", 1, "features", "history_segment"), ("candidates", 2, "bid"),
              ("candidates", 0, "id"), ("candidates", 1, "is_ad"), ("objective",), ("objective", "weights"),
              ("slots", "positions"), ("slots", "ad_positions"), ("explain",), ("candidates", 1, "price")]


def _replace(body: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    node = body
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    node[path[-1]] = value
    return body


def _assert_clean(r: Any) -> dict[str, Any]:
    assert r.status_code < 500, r.text
    assert "Traceback" not in r.text
    out = r.json()
    if r.status_code >= 400:
        assert out["detail"] and out["error_count"] >= 1 and len(r.content) < 20_000
    return out


@SETTINGS
@given(path=st.sampled_from(RANK_PATHS), value=json_values)
def test_random_values_anywhere_in_a_rank_request_are_clean(client: TestClient, path: tuple, value: Any) -> None:
    body = _replace(_rank_body(candidates=_candidates(3)), path, value)
    r = _post(client, body)
    out = _assert_clean(r)
    if r.status_code == 200:  # what was accepted comes back unchanged
        sent_ids = [c.get("id") if isinstance(c, dict) else None for c in body["candidates"]]
        for item in out["page"]:
            assert item.get("id") == sent_ids[item["index"]]
        if path == ("context", "recency"):
            assert value is None or (type(value) in (int, float) and not isinstance(value, bool)) or (
                isinstance(value, str) and math.isfinite(float(value)))


@SETTINGS
@given(records=st.lists(st.dictionaries(st.sampled_from(sorted(CONTEXT) + ["history_segment", "mens", "x"]),
                                         json_values, max_size=6), min_size=1, max_size=3),
       scenario=st.sampled_from(["Mens E-Mail", "No E-Mail", 1, None, "nope"]))
def test_random_score_requests_are_clean(client: TestClient, records: list[Any], scenario: Any) -> None:
    _assert_clean(_post(client, {"scenario": scenario, "records": records}, "/v1/score"))


@SETTINGS
@given(body=st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()))
def test_random_bodies_are_clean(client: TestClient, body: bytes) -> None:
    _assert_clean(_post(client, body))


@settings(max_examples=200, deadline=None)
@given(value=st.recursive(st.integers(min_value=-(2**80), max_value=2**80) | st.floats(allow_nan=False)
                          | st.text(max_size=5) | st.none() | st.booleans(),
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                                      max_size=4), max_leaves=12))
def test_parsing_never_changes_a_value(value: Any) -> None:
    """Every number comes back exactly as sent, or as an out-of-range marker: never rounded."""
    body = json.dumps(value).encode()
    parsed = parse_json(body, "application/json")

    def same(sent: Any, got: Any) -> None:
        if isinstance(sent, bool) or sent is None or isinstance(sent, str):
            assert got == sent and type(got) is type(sent)
        elif isinstance(sent, int):
            if -(2**63) <= sent <= 2**64 - 1:
                assert type(got) is int and got == sent
            else:
                assert isinstance(got, OutOfRange) and int(got.text) == sent
        elif isinstance(sent, float):
            assert type(got) is float and (got == sent or (math.isinf(sent) and got == sent))
        elif isinstance(sent, list):
            assert isinstance(got, list) and len(got) == len(sent)
            for a, b in zip(sent, got, strict=True):
                same(a, b)
        else:
            assert isinstance(got, dict) and list(got) == list(sent)
            for k in sent:
                same(sent[k], got[k])

    same(value, parsed)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(json_values, min_size=1, max_size=5))
def test_encoding_a_feature_accepts_only_its_kind_and_keeps_the_value(scorer: Scorer, values: list[Any]) -> None:
    encoder = scorer.encoder
    try:
        numbers = encoder.column("history", values, lambda i: ("records", i))
    except FeatureError:
        assert any(v is not None and (isinstance(v, bool) or not isinstance(v, int | float | str)) or
                   (isinstance(v, str) and not _finite_text(v)) for v in values)
    else:
        for v, got in zip(values, numbers, strict=True):
            assert (v is None and np.isnan(got)) or got == float(v)
    try:
        text = encoder.column("zip_code", values, lambda i: ("records", i))
    except FeatureError:
        assert any(isinstance(v, list | dict) for v in values)
    else:
        assert all(not isinstance(v, list | dict) for v in values)
        from msmtrec.data.preprocessor import text_value

        assert list(text) == [text_value(v) for v in values]


def _finite_text(v: str) -> bool:
    try:
        return math.isfinite(float(v))
    except ValueError:
        return False



def test_repeated_rows_are_scored_once_and_tie_exactly(scorer: Scorer) -> None:
    """A page of 300 candidates with 16 distinct feature rows: the model sees 16 rows, every copy gets the
    bit-identical score of its row (so copies tie exactly and keep request order), and the scores are those
    of scoring every row."""
    from msmtrec.serving.app import Service, distinct_rows, score_batch

    cands = [{"features": {"history_segment": SEGMENTS[i % 4], "mens": (i // 4) % 2, "womens": (i // 8) % 2}}
             for i in range(300)]
    batch, _ = scorer.encoder.encode_records(0, [c["features"] for c in cands], CONTEXT, "candidates")
    rows, inverse = distinct_rows(batch)
    assert rows["scenario"].shape[0] == 16 and len(inverse) == 300
    got = score_batch(Service.load(scorer), batch, ["body"])
    full = scorer.outputs(batch)
    for task, values in got.items():
        np.testing.assert_allclose(values, full[task], rtol=1e-6, atol=1e-7)
        for i in range(16):
            assert len(set(values[i::16].tolist())) == 1  # copies of one row: one score, to the bit
    client = TestClient(create_app(scorer))
    page = _post(client, _rank_body(candidates=cands, slots={"positions": 300})).json()["page"]
    by_row: dict[int, list[int]] = {}
    for p in page:
        by_row.setdefault(p["index"] % 16, []).append(p["index"])
    assert all(indices == sorted(indices) for indices in by_row.values())
    assert distinct_rows({k: v[:63] for k, v in batch.items()}) is None  # small batches are scored as they are


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300) | st.text(alphabet="0123456789,:ab", max_size=300).map(str.encode),
       block=st.integers(min_value=1, max_value=64))
def test_the_body_scan_counts_values_and_finds_long_digit_runs_across_blocks(body: bytes, block: int) -> None:
    import re

    from msmtrec.serving import schemas

    original = schemas.SCAN_BLOCK
    schemas.SCAN_BLOCK = block
    try:
        values, long_run = schemas.scan_body(body)
    finally:
        schemas.SCAN_BLOCK = original
    assert values == body.count(b",") + body.count(b":")
    assert long_run == (re.search(rb"[0-9]{20}", body) is not None)
