"""The HTTP service: score raw records and rank candidates into a page, with an OpenAPI schema.

Design choices, and why:

* One :class:`~msmtrec.serving.scorer.Scorer` is loaded at start-up and reused by every request.
* Handlers are ``async def`` and run the model inline: the work is CPU-bound and one model call per
  request already uses the intra-op threads, so running requests one at a time on the event loop gives
  lower tail latency than a thread pool fighting over the same cores.
* Context and candidate features merge into one row per candidate, the frame is built column-wise once,
  and all candidates are scored in one model call; only the page assembly loops, over slots.
* Bad input never takes the service down: validation errors are 422 naming the field, oversized
  requests are 413 (checked on the byte stream before parsing, and on the candidate count), and any
  other failure is a JSON 500 for that request only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import NotRequired, TypedDict

from msmtrec import __version__
from msmtrec.data.preprocessor import TransformReport
from msmtrec.data.schema import Batch
from msmtrec.errors import MsmtrecError
from msmtrec.serving import ranking
from msmtrec.serving.scorer import FeatureError, Scorer
from msmtrec.tasks import kind_of

log = logging.getLogger("msmtrec.serving")

FeatureValue = str | bool | int | float | None | list[str | int | float]
"""A raw feature value as in the training files; lists are sequence features; null means missing."""

EMPTY: dict[str, Any] = {}


@dataclass
class Limits:
    """Request size limits; beyond them the service answers 413 instead of doing unbounded work."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_candidates: int = 5000
    max_records: int = 10000


class ServiceError(Exception):
    """A request problem that maps to an HTTP status, with the offending field's location."""

    def __init__(self, status: int, loc: list[str | int], msg: str, kind: str = "value_error") -> None:
        super().__init__(msg)
        self.status, self.loc, self.msg, self.kind = status, loc, msg, kind


# --------------------------------------------------------------------------------------------- schemas


class _Strict(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")


class ScoreRequest(_Strict):
    scenario: str | int = Field(description="Scenario value or display name, as in training.")
    records: list[dict[str, FeatureValue]] = Field(min_length=1, description="Raw feature rows.")


class ScoreResponse(BaseModel):
    model: str
    scenario: str
    tasks: list[str]
    predictions: list[dict[str, float]] = Field(description="Per record: probability (binary) or value.")
    oov: dict[str, int] = Field(description="Values that fell into the out-of-vocabulary bucket, per feature.")


NonNegative = Annotated[float, Field(ge=0)]


# A TypedDict, not a model: pydantic validates it the same way (types, NaN, unknown keys), but a request
# with 1,000 candidates builds 1,000 plain dicts instead of 1,000 model objects, which roughly halves its
# validation time (1.8 → 1.0 ms for RankRequest.model_validate of a load-benchmark payload).
class CandidateIn(TypedDict):
    """One candidate: its item features and, for an ad, its bid."""

    __pydantic_config__ = ConfigDict(allow_inf_nan=False, extra="forbid")  # type: ignore[misc]
    id: NotRequired[Annotated[str | int | None, Field(description="Echoed back on the page.")]]
    features: NotRequired[Annotated[dict[str, FeatureValue], Field(description="Item features.")]]
    is_ad: NotRequired[bool]
    bid: NotRequired[Annotated[NonNegative | None, Field(description="Ad bid per click (cpc) or conversion (cpa).")]]
    bid_type: NotRequired[Literal["cpc", "cpa"]]
    price: NotRequired[Annotated[NonNegative | None, Field(description="Item price, used by objective.price_tasks.")]]


class CandidateColumns(_Strict):
    """Candidates as columns: one list per field, every list one entry per candidate, in the same order.

    The same information as ``candidates`` in far fewer JSON objects, so it is cheaper to send, parse and
    check: the faster form for long candidate lists (see the load benchmark in docs/serving.md).
    """

    features: dict[str, list[FeatureValue]] = Field(
        default_factory=dict, description="Item features, one list per feature."
    )
    id: list[str | int | None] | None = Field(None, description="Echoed back on the page.")
    is_ad: list[bool] | None = Field(None, description="Default: no ads.")
    bid: list[NonNegative | None] | None = Field(None, description="Per candidate; needed for ads.")
    bid_type: list[Literal["cpc", "cpa"]] | None = Field(None, description="Default: cpc.")
    price: list[NonNegative | None] | None = Field(None, description="Default: 1.")

    @model_validator(mode="after")
    def _same_length(self) -> CandidateColumns:
        lengths = {name: len(v) for name in ("id", "is_ad", "bid", "bid_type", "price")
                   if (v := getattr(self, name)) is not None}
        lengths.update({f"features.{k}": len(v) for k, v in self.features.items()})
        if not lengths:
            raise ValueError("no columns: give at least the ids or one feature list")
        n = Counter(lengths.values()).most_common(1)[0][0]  # the odd one out is named, not the majority
        odd = {name: length for name, length in lengths.items() if length != n}
        if odd:
            shown = ", ".join(f"{name!r} has {length}" for name, length in odd.items())
            raise ValueError(f"columns of different lengths: {shown} entries, the others {n}; "
                             "every column needs one entry per candidate")
        if n == 0:
            raise ValueError("no candidates: the columns are empty")
        return self

    @property
    def rows(self) -> int:
        for v in (self.id, self.is_ad, self.bid, self.bid_type, self.price, *self.features.values()):
            if v is not None:
                return len(v)
        return 0  # pragma: no cover - the validator requires a column


class ObjectiveIn(_Strict):
    weights: dict[str, float] | None = Field(
        None, description="Value per unit of each task's prediction; default from the run config or 1 per binary task."
    )
    price_tasks: list[str] = Field(default_factory=list, description="Tasks whose value is multiplied by price.")
    ad_weight: float = Field(1.0, ge=0, description="Value of one unit of ad revenue relative to the weights.")
    click_task: str | None = None
    conversion_task: str | None = None


class SlotsIn(_Strict):
    positions: int = Field(10, ge=1, le=10000, description="Number of positions on the page.")
    max_ads: int | None = Field(None, ge=0, description="At most this many ads (default: no limit).")
    ad_positions: list[int] | None = Field(None, description="1-based positions ads may take (default: any).")

    @model_validator(mode="after")
    def _positions_positive(self) -> SlotsIn:
        if self.ad_positions is not None and any(p < 1 for p in self.ad_positions):
            raise ValueError("ad_positions are 1-based and must be >= 1")
        return self


class RankRequest(_Strict):
    scenario: str | int
    context: dict[str, FeatureValue] = Field(
        default_factory=dict, description="User/context features shared by all candidates."
    )
    candidates: list[CandidateIn] | None = Field(
        None, min_length=1, description="One object per candidate (or send candidate_columns instead)."
    )
    candidate_columns: CandidateColumns | None = Field(
        None, description="The candidates as columns (instead of candidates); cheaper for long lists."
    )
    objective: ObjectiveIn | None = None
    slots: SlotsIn = Field(default_factory=SlotsIn)
    explain: bool = Field(False, description="Return attention and gate weights for page items.")

    @model_validator(mode="after")
    def _one_candidate_form(self) -> RankRequest:
        if (self.candidates is None) == (self.candidate_columns is None):
            raise ValueError("give the candidates either as candidates (a list of objects) or as "
                             "candidate_columns (one list per field), exactly one of the two")
        return self


class PageItem(BaseModel):
    position: int
    index: int = Field(description="Index of the candidate in the request.")
    id: str | int | None = None
    is_ad: bool
    value: float = Field(description="Objective value of the candidate.")
    revenue: float = Field(description="Expected ad revenue (0 for organic items).")
    worth: float = Field(description="What the candidate was ranked by: value, plus ad_weight x revenue for ads.")
    predictions: dict[str, float]
    explain: dict[str, Any] | None = None


class RankResponse(BaseModel):
    model: str
    scenario: str
    candidates: int
    objective: dict[str, Any]
    page: list[PageItem]
    oov: dict[str, int]
    explain_fields: list[str] | None = None


# ------------------------------------------------------------------------------------------ middleware


class BodyLimit:
    """ASGI middleware: 413 for bodies over ``limit`` bytes, checked before anything parses them."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _too_large(send, self.limit)
            return
        if length is not None:
            await self.app(scope, receive, send)
            return
        # no declared length (chunked): buffer up to the limit, then replay
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                await _too_large(send, self.limit)
                return
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Callable, limit: int) -> None:
    body = json.dumps({"detail": [{"loc": ["body"], "msg": f"request body over {limit} bytes", "type": "too_large"}]})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body.encode()})


# -------------------------------------------------------------------------------------------------- app


def create_app(scorer: Scorer, limits: Limits | None = None) -> FastAPI:
    """The FastAPI application around one loaded run."""
    limits = limits or Limits()
    schema = scorer.schema
    config = scorer.run.config or {}
    base_weights = ranking.default_weights(schema, config)
    version = _model_version(scorer)
    app = FastAPI(
        title="msmtrec",
        version=__version__,
        description="Multi-scenario, multi-task scoring and ranking for one trained run.",
    )
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    app.state.scorer = scorer
    app.state.limits = limits

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, e: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": [{"loc": e.loc, "msg": e.msg, "type": e.kind}]}, status_code=e.status)

    @app.exception_handler(MsmtrecError)
    async def _user_error(_: Request, e: MsmtrecError) -> JSONResponse:
        return JSONResponse({"detail": [{"loc": ["body"], "msg": str(e), "type": "value_error"}]}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
                  for err in e.errors()]
        return JSONResponse({"detail": _dedupe(errors)}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("request failed")
        return JSONResponse({"detail": f"internal error: {type(e).__name__}: {e}"}, status_code=500)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the model is loaded and the process answers."""
        return {"status": "ok", "model": scorer.model_name}

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        """What this service serves: model, scenarios, tasks, features, default objective, metrics."""
        spec = scorer.pre.spec
        return {
            "model": scorer.model_name,
            "version": version,
            "library_version": __version__,
            "backend": scorer.backend,
            "dataset": spec.name,
            "scenarios": list(schema.scenarios),
            "scenario_values": list(scorer.pre.scenarios),
            "tasks": [
                {"name": t.name, "type": t.type, "inside": t.inside, "transform": t.transform,
                 "output": kind_of(t).units}
                for t in spec.tasks
            ],
            "features": {
                "sparse": [f.name for f in spec.features.sparse],
                "dense": [f.name for f in spec.features.dense],
                "sequence": [f.name for f in spec.features.sequence],
                "required": scorer.required,
            },
            "objective": {"weights": base_weights,
                          "click_task": ranking.default_click_task(schema),
                          "conversion_task": ranking.default_conversion_task(schema)},
            "limits": {"max_body_bytes": limits.max_body_bytes, "max_candidates": limits.max_candidates,
                       "max_records": limits.max_records},
            "metrics": scorer.run.metrics,
        }

    @app.post("/v1/score", response_model=ScoreResponse)
    async def score(req: ScoreRequest) -> dict[str, Any]:
        """Predictions per task for raw feature records in one scenario."""
        if len(req.records) > limits.max_records:
            msg = f"{len(req.records)} records; the limit is {limits.max_records}"
            raise ServiceError(413, ["body", "records"], msg, "too_large")
        scen = _scenario(scorer, req.scenario)
        batch, report = _encode(lambda: scorer.encode_records(scen, req.records, None, "records"))
        preds = _finite(scorer.outputs(batch), ["body", "records"])
        cols = [preds[t].tolist() for t in scorer.task_names]
        rows = [dict(zip(scorer.task_names, vals, strict=True)) for vals in zip(*cols, strict=True)]
        return {"model": scorer.model_name, "scenario": str(req.scenario), "tasks": scorer.task_names,
                "predictions": rows, "oov": _nonzero(report.oov)}

    @app.post("/v1/rank", response_model=RankResponse, response_model_exclude_none=True)
    async def rank(req: RankRequest, response: Response) -> dict[str, Any]:
        """Score every candidate in one model call, then fill the page slot by slot (ads compete).

        The ``Server-Timing`` header splits the handler's time into feature encoding, model and page
        assembly, so a load test can tell model cost from transport and parsing.
        """
        t0 = time.perf_counter()
        rows = req.candidates
        form = "candidates" if rows is not None else "candidate_columns"
        n = len(rows) if rows is not None else req.candidate_columns.rows
        if n > limits.max_candidates:
            msg = f"{n} candidates; the limit is {limits.max_candidates}"
            raise ServiceError(413, ["body", form], msg, "too_large")
        scen = _scenario(scorer, req.scenario)
        objective = _objective(req.objective, schema, base_weights)
        cols = req.candidate_columns
        ids, arrays = _row_candidates(rows) if rows is not None else _column_candidates(cols, n)
        _check_ads(arrays, objective, form, scorer.task_names)
        if rows is not None:
            features = [c.get("features", EMPTY) for c in rows]
            batch, report = _encode(lambda: scorer.encode_records(scen, features, req.context, "candidates"))
        else:
            batch, report = _encode(lambda: scorer.encode_columns(scen, cols.features, n, req.context))
        t1 = time.perf_counter()
        preds = _finite(scorer.outputs(batch), ["body", form])
        t2 = time.perf_counter()
        slots = ranking.Slots(
            positions=req.slots.positions,
            max_ads=n if req.slots.max_ads is None else req.slots.max_ads,
            ad_positions=ranking.ordered_positions(req.slots.ad_positions),
        )
        page = ranking.rank(preds, objective, slots, arrays)
        explained: dict[str, np.ndarray] = {}
        if req.explain and page.order:
            sub = {k: v[page.order] for k, v in batch.items()}
            explained = scorer.explain(sub)
        items = []
        for j, (i, pos) in enumerate(zip(page.order, page.positions, strict=True)):
            item: dict[str, Any] = {
                "position": pos, "index": i, "id": ids[i], "is_ad": bool(arrays.is_ad[i]),
                "value": float(page.value[i]), "revenue": float(page.revenue[i]), "worth": float(page.worth[i]),
                "predictions": {t: float(preds[t][i]) for t in scorer.task_names},
            }
            if req.explain:
                item["explain"] = {k: v[j].tolist() for k, v in explained.items()}
            items.append(item)
        out: dict[str, Any] = {
            "model": scorer.model_name, "scenario": str(req.scenario), "candidates": n,
            "objective": {"weights": objective.weights, "price_tasks": list(objective.price_tasks),
                          "ad_weight": objective.ad_weight, "click_task": objective.click_task,
                          "conversion_task": objective.conversion_task},
            "page": items, "oov": _nonzero(report.oov),
        }
        if req.explain:
            out["explain_fields"] = schema.field_names()
        t3 = time.perf_counter()
        response.headers["Server-Timing"] = (
            f"features;dur={1e3 * (t1 - t0):.2f}, model;dur={1e3 * (t2 - t1):.2f}, page;dur={1e3 * (t3 - t2):.2f}"
        )
        return out

    return app


# -------------------------------------------------------------------------------------------- helpers


def _scenario(scorer: Scorer, scenario: str | int) -> str:
    try:
        return scorer.resolve_scenario(scenario)
    except MsmtrecError as e:
        raise ServiceError(422, ["body", "scenario"], str(e)) from None


def _encode(call: Callable[[], tuple[Batch, TransformReport]]) -> tuple[Batch, TransformReport]:
    """Run a request encoder, turning a FeatureError into a 422 located at the request field."""
    try:
        return call()
    except FeatureError as e:
        loc: list[str | int] = ["body", e.what]
        if e.what == "candidate_columns":
            loc += ["features", e.column] + ([] if e.index is None else [e.index])
        else:
            if e.index is not None:
                loc.append(e.index)
                if e.what == "candidates":
                    loc.append("features")
            loc.append(e.column)
        raise ServiceError(422, loc, str(e), "missing" if "missing" in str(e) else "type_error") from None


def _row_candidates(cands: list[CandidateIn]) -> tuple[list[Any], ranking.Candidates]:
    """Ids and ad arrays from candidate objects (a missing bid is NaN until :func:`_check_ads`)."""
    n = len(cands)
    arrays = ranking.Candidates(
        is_ad=np.fromiter((c.get("is_ad", False) for c in cands), bool, n),
        bid=np.fromiter((_or(c.get("bid"), np.nan) for c in cands), np.float64, n),
        cpa=np.fromiter((c.get("bid_type") == "cpa" for c in cands), bool, n),
        price=np.fromiter((_or(c.get("price"), 1.0) for c in cands), np.float64, n),
    )
    return [c.get("id") for c in cands], arrays


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _column_candidates(cols: CandidateColumns, n: int) -> tuple[list[Any], ranking.Candidates]:
    """Ids and ad arrays from candidate columns; absent columns take the per-candidate defaults."""
    def numbers(values: list[float | None] | None, default: float) -> np.ndarray:
        if values is None:
            return np.full(n, default)
        return np.array([default if v is None else v for v in values], dtype=np.float64)

    arrays = ranking.Candidates(
        is_ad=np.zeros(n, bool) if cols.is_ad is None else np.array(cols.is_ad, dtype=bool),
        bid=numbers(cols.bid, np.nan),
        cpa=np.zeros(n, bool) if cols.bid_type is None else np.array(cols.bid_type, dtype=object) == "cpa",
        price=numbers(cols.price, 1.0),
    )
    return cols.id if cols.id is not None else [None] * n, arrays


def _check_ads(arrays: ranking.Candidates, objective: ranking.Objective, form: str, tasks: list[str]) -> None:
    """Every ad has a bid and the task its bid type pays for; then missing bids of organic items become 0."""
    missing = arrays.is_ad & np.isnan(arrays.bid)
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        loc: list[str | int] = ["body", form, i, "bid"] if form == "candidates" else ["body", form, "bid", i]
        raise ServiceError(422, loc, "an ad (is_ad: true) needs a bid", "missing")
    needs = (("cpc", objective.click_task, ~arrays.cpa), ("cpa", objective.conversion_task, arrays.cpa))
    for kind, task, pays in needs:
        if task is None and (arrays.is_ad & pays).any():
            name = "click" if kind == "cpc" else "conversion"
            raise ServiceError(422, ["body", "objective", f"{name}_task"],
                               f"{kind} ads need a {name} task (name it as objective.{name}_task); "
                               f"this model's tasks are {tasks}")
    arrays.bid = np.nan_to_num(arrays.bid, nan=0.0)


def _objective(obj: ObjectiveIn | None, schema: Any, base_weights: dict[str, float]) -> ranking.Objective:
    obj = obj or ObjectiveIn()
    objective = ranking.Objective(
        weights=dict(obj.weights) if obj.weights is not None else dict(base_weights),
        price_tasks=tuple(obj.price_tasks),
        ad_weight=obj.ad_weight,
        click_task=obj.click_task or ranking.default_click_task(schema),
        conversion_task=obj.conversion_task or ranking.default_conversion_task(schema),
    )
    problems = ranking.check_objective(objective, schema)
    if problems:
        field = problems[0].split(":", 1)[0].split(".")
        raise ServiceError(422, ["body", *field], "; ".join(problems))
    return objective


def _finite(preds: dict[str, np.ndarray], loc: list[str | int]) -> dict[str, np.ndarray]:
    """Guard the response: a non-finite prediction (overflowing expm1) is reported, not serialised."""
    for t, v in preds.items():
        if not np.isfinite(v).all():
            i = int(np.flatnonzero(~np.isfinite(v))[0])
            raise ServiceError(422, [*loc, i], f"prediction for task {t!r} is not finite; check the input values")
    return preds


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: int(v) for k, v in counts.items() if v}


def _dedupe(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic reports a union mismatch once per member; keep the most telling message per field."""
    seen: dict[tuple, dict[str, Any]] = {}
    for err in errors:
        loc = err["loc"]
        # strip the union-member suffix (e.g. "str", "list[union[str,int,float]]") from value locations
        while loc and isinstance(loc[-1], str) and loc[-1] in _UNION_MEMBERS:
            loc = loc[:-1]
        key = tuple(loc)
        if key not in seen or err["type"] == "finite_number":
            seen[key] = {**err, "loc": list(loc)}
    return list(seen.values())


_UNION_MEMBERS = {"str", "bool", "int", "float", "list[union[str,int,float]]", "none"}


def _model_version(scorer: Scorer) -> str:
    """A short content hash of the weights, so clients can tell two deployments of a run apart."""
    path = scorer.run.path
    if path is not None:
        weights = path / "model.pt"
        if weights.exists():
            return hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    return "unsaved"
