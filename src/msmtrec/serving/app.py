"""The HTTP service: score raw records and rank candidates into a page, with an OpenAPI schema.

A rank request descends once, each step a named function of this package:

1. body → validated request: :func:`msmtrec.serving.schemas.read_request` (content type, parsing, cost
   bounds, strict validation);
2. request → encoded batch: :class:`msmtrec.data.records.RecordEncoder`, the data layer's request side of
   :meth:`~msmtrec.data.preprocessor.Preprocessor.encode`, the encoding training uses (:func:`encode_rank`);
3. batch → scores: the scorer's backend (:func:`score_batch`);
4. scores → page: :mod:`msmtrec.serving.ranking` (:func:`rank_page`);
5. page → response bytes (:func:`rank_response`).

:func:`rank` and :func:`score` chain the steps synchronously; the routes (:func:`rank_route`,
:func:`score_route`, ...) are module-level coroutines that read the body and run that chain in a worker
thread, at most :attr:`Limits.workers` at a time, so the event loop stays free: ``/health`` answers while a
large request is parsed or scored, and a request waiting for a worker is cheap. Waiting requests are
bounded too (:attr:`Limits.max_pending`; beyond, 503).

Bad input never takes the service down: problems are 4xx naming the field (at most a few per body, with a
count), oversized requests are 413 (checked on the byte stream before parsing, then on the numbers of
candidates, records and keys before validation), and any other failure is a JSON 500 for that request only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np
import orjson
import torch
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from msmtrec import __version__
from msmtrec.data.preprocessor import TransformReport
from msmtrec.data.records import FeatureError
from msmtrec.data.schema import Batch
from msmtrec.errors import MsmtrecError
from msmtrec.serving import ranking
from msmtrec.serving.errors import ServiceError
from msmtrec.serving.schemas import (
    CandidateIn,
    ErrorResponse,
    Limits,
    RankRequest,
    RankResponse,
    ScoreRequest,
    ScoreResponse,
    dedupe,
    read_request,
)
from msmtrec.serving.scorer import Scorer
from msmtrec.tasks import kind_of

__all__ = ["Limits", "Service", "ServiceError", "create_app", "rank", "score"]

log = logging.getLogger("msmtrec.serving")


@dataclass
class Service:
    """What every request needs: the loaded run, the limits, and the run's defaults, computed once."""

    scorer: Scorer
    limits: Limits = field(default_factory=Limits)
    base_weights: dict[str, float] = field(default_factory=dict)
    version: str = "unsaved"
    limiter: anyio.CapacityLimiter | None = None
    pending: int = 0

    @classmethod
    def load(cls, scorer: Scorer, limits: Limits | None = None) -> Service:
        limits = limits or Limits()
        return cls(scorer, limits, ranking.default_weights(scorer.schema, scorer.run.config or {}),
                   _model_version(scorer))


# ------------------------------------------------------------------------------------ the rank descent


@dataclass
class RankTiming:
    """Seconds spent per step of one rank request (reported in the ``Server-Timing`` header)."""

    parse: float = 0.0
    features: float = 0.0
    model: float = 0.0
    page: float = 0.0

    def header(self) -> str:
        names = ("parse", "features", "model", "page")
        return ", ".join(f"{name};dur={1e3 * getattr(self, name):.2f}" for name in names)


@dataclass
class RankPlan:
    """A validated rank request turned into ranking inputs (before any model work)."""

    scenario: int
    form: str
    rows: int
    ids: list[Any]
    candidates: ranking.Candidates
    objective: ranking.Objective
    slots: ranking.Slots


def rank(service: Service, body: bytes, content_type: str | None = "application/json") -> tuple[bytes, RankTiming]:
    """One ``/v1/rank`` request, body to response bytes: every step below, in order."""
    t0 = time.perf_counter()
    req = read_request(body, content_type, RankRequest, service.limits)
    t1 = time.perf_counter()
    plan = plan_rank(service, req)
    batch, report = encode_rank(service, req, plan)
    t2 = time.perf_counter()
    preds = score_batch(service, batch, ["body", plan.form])
    t3 = time.perf_counter()
    page = rank_page(plan, preds)
    out = rank_response(service, req, plan, page, preds, report, batch)
    return out, RankTiming(t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3)


def plan_rank(service: Service, req: RankRequest) -> RankPlan:
    """Scenario index, candidate arrays, objective and slots of a validated request (422 on a bad one)."""
    rows, cols = req.candidates, req.candidate_columns
    form = "candidates" if rows is not None else "candidate_columns"
    n = len(rows) if rows is not None else cols.rows
    limit = service.limits.max_candidates
    if n > limit:
        raise ServiceError(413, ["body", form], f"{n} candidates; the limit is {limit}", "too_large")
    scenario = scenario_index(service.scorer, req.scenario)
    obj = req.objective
    objective = ranking.objective_from(
        service.scorer.schema, service.base_weights,
        **({} if obj is None else {"weights": obj.weights, "price_tasks": obj.price_tasks, "ad_weight": obj.ad_weight,
                                   "click_task": obj.click_task, "conversion_task": obj.conversion_task}))
    if rows is not None:
        ids, cands = ranking.candidates_from_rows(rows)
    else:
        ids, cands = ranking.candidates_from_columns(n, cols.id, cols.is_ad, cols.bid, cols.bid_type, cols.price)
    ranking.check_ads(cands, objective, form, service.scorer.task_names)
    slots = ranking.slots_from(req.slots.positions, req.slots.max_ads, req.slots.ad_positions, n)
    return RankPlan(scenario, form, n, ids, cands, objective, slots)


def scenario_index(scorer: Scorer, scenario: str | int) -> int:
    """A request's scenario (value or display name) → its index, or a 422 at ``scenario``."""
    try:
        return scorer.encoder.scenarios.index(scenario)
    except MsmtrecError as e:
        raise ServiceError(422, ["body", "scenario"], str(e)) from None


def encode_rank(service: Service, req: RankRequest, plan: RankPlan) -> tuple[Batch, TransformReport]:
    """The candidates merged with the context → the model's batch (data layer; 422 at the bad feature)."""
    encoder = service.scorer.encoder
    if req.candidates is not None:
        features = [c.get("features", _EMPTY) for c in req.candidates]
        return encode(lambda: encoder.encode_records(plan.scenario, features, req.context, "candidates"))
    cols = req.candidate_columns
    return encode(lambda: encoder.encode_columns(plan.scenario, cols.features, plan.rows, req.context))


_EMPTY: dict[str, Any] = {}


def encode(call: Callable[[], tuple[Batch, TransformReport]]) -> tuple[Batch, TransformReport]:
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
            if e.column:
                loc.append(e.column)
        raise ServiceError(422, loc, str(e), "missing" if "missing" in str(e) else "type_error") from None


def score_batch(service: Service, batch: Batch, loc: list[str | int]) -> dict[str, np.ndarray]:
    """The backend's predictions in user units; a non-finite one (overflowing ``expm1``) is a 422.

    Candidates whose encoded rows are identical are scored once (:func:`distinct_rows`): a page of
    candidates often repeats feature rows, the model is most of a request's time, and identical candidates
    then get bit-identical scores, so they tie exactly and keep their request order on the page.
    """
    distinct = distinct_rows(batch)
    if distinct is None:
        preds = service.scorer.outputs(batch)
    else:
        rows, inverse = distinct
        preds = {t: v[inverse] for t, v in service.scorer.outputs(rows).items()}
    for t, v in preds.items():
        if not np.isfinite(v).all():
            i = int(np.flatnonzero(~np.isfinite(v))[0])
            raise ServiceError(422, [*loc, i], f"prediction for task {t!r} is not finite; check the input values")
    return preds


DISTINCT_MIN_ROWS = 64
"""Smaller batches are scored as they are (looking for repeated rows would cost more than it saves)."""


def distinct_rows(batch: Batch, keep_below: float = 0.75) -> tuple[Batch, np.ndarray] | None:
    """The batch's distinct rows and, per original row, its index among them (``None`` when fewer than
    :data:`DISTINCT_MIN_ROWS` rows, or more than ``keep_below`` of them distinct: then the whole batch is
    cheaper). Rows compare by the bytes of every tensor, so only exactly equal inputs are merged."""
    n = int(batch["scenario"].shape[0])
    if n < DISTINCT_MIN_ROWS:
        return None
    parts = [v.numpy().reshape(n, -1).view(np.uint8) for _, v in sorted(batch.items())]
    keys = np.ascontiguousarray(np.concatenate(parts, axis=1))
    _, first, inverse = np.unique(keys.view(np.dtype((np.void, keys.shape[1]))).ravel(), return_index=True,
                                  return_inverse=True)
    if len(first) > keep_below * n:
        return None
    index = torch.from_numpy(first)
    return {k: v.index_select(0, index) for k, v in batch.items()}, inverse.ravel()


def rank_page(plan: RankPlan, preds: dict[str, np.ndarray]) -> ranking.Page:
    """Values, ad revenue and the page (ranking), refused if a figure overflowed."""
    page = ranking.rank(preds, plan.objective, plan.slots, plan.candidates)
    ranking.check_finite(page, plan.form)
    return page


def rank_response(
    service: Service,
    req: RankRequest,
    plan: RankPlan,
    page: ranking.Page,
    preds: dict[str, np.ndarray],
    report: TransformReport,
    batch: Batch,
) -> bytes:
    """The page as response bytes (with the model's explanations of the page's items when asked)."""
    scorer, order = service.scorer, page.order
    tasks = scorer.task_names
    chosen = {t: preds[t][order].tolist() for t in tasks}
    value, revenue, worth = (page.value[order].tolist(), page.revenue[order].tolist(), page.worth[order].tolist())
    is_ad = plan.candidates.is_ad[order].tolist()
    explained: dict[str, np.ndarray] = {}
    if req.explain and order:
        explained = scorer.explain({k: v[order] for k, v in batch.items()})
    items = []
    for j, (i, pos) in enumerate(zip(order, page.positions, strict=True)):
        item: dict[str, Any] = {"position": pos, "index": i}
        if plan.ids[i] is not None:
            item["id"] = plan.ids[i]
        item.update(is_ad=is_ad[j], value=value[j], revenue=revenue[j], worth=worth[j],
                    predictions={t: chosen[t][j] for t in tasks})
        if req.explain:
            item["explain"] = {k: v[j].tolist() for k, v in explained.items()}
        items.append(item)
    objective = plan.objective
    out: dict[str, Any] = {
        "model": scorer.model_name, "scenario": str(req.scenario), "candidates": plan.rows,
        "objective": _drop_none({"weights": objective.weights, "price_tasks": list(objective.price_tasks),
                                 "ad_weight": objective.ad_weight, "click_task": objective.click_task,
                                 "conversion_task": objective.conversion_task}),
        "page": items, "oov": _nonzero(report.oov),
    }
    if req.explain:
        out["explain_fields"] = scorer.schema.field_names()
    return orjson.dumps(out)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# ----------------------------------------------------------------------------------- the score descent


def score(service: Service, body: bytes, content_type: str | None = "application/json") -> bytes:
    """One ``/v1/score`` request: validated records → batch → predictions per record."""
    req = read_request(body, content_type, ScoreRequest, service.limits)
    scorer = service.scorer
    scenario = scenario_index(scorer, req.scenario)
    batch, report = encode(lambda: scorer.encoder.encode_records(scenario, req.records, None, "records"))
    preds = score_batch(service, batch, ["body", "records"])
    tasks = scorer.task_names
    rows = [dict(zip(tasks, vals, strict=True)) for vals in zip(*(preds[t].tolist() for t in tasks), strict=True)]
    return orjson.dumps({"model": scorer.model_name, "scenario": str(req.scenario), "tasks": tasks,
                         "predictions": rows, "oov": _nonzero(report.oov)})


def model_info(service: Service) -> dict[str, Any]:
    """What this service serves: model, scenarios, tasks, features, default objective, limits, metrics."""
    scorer = service.scorer
    spec, schema, limits = scorer.pre.spec, scorer.schema, service.limits
    scenarios = scorer.encoder.scenarios
    return {
        "model": scorer.model_name,
        "version": service.version,
        "library_version": __version__,
        "backend": scorer.backend,
        "dataset": spec.name,
        "scenarios": list(scenarios.display),
        "scenario_values": list(scenarios.values),
        "tasks": [
            {"name": t.name, "type": t.type, "inside": t.inside, "transform": t.transform,
             "output": kind_of(t).units}
            for t in spec.tasks
        ],
        "features": {
            "sparse": [f.name for f in spec.features.sparse],
            "dense": [f.name for f in spec.features.dense],
            "sequence": [f.name for f in spec.features.sequence],
            "required": scorer.encoder.required,
        },
        "objective": {"weights": service.base_weights,
                      "click_task": ranking.default_click_task(schema),
                      "conversion_task": ranking.default_conversion_task(schema)},
        "limits": {"max_body_bytes": limits.max_body_bytes, "max_candidates": limits.max_candidates,
                   "max_records": limits.max_records, "max_fields": limits.max_fields},
        "metrics": scorer.run.metrics,
    }


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: int(v) for k, v in counts.items() if v}


def _model_version(scorer: Scorer) -> str:
    """A short content hash of the weights, so clients can tell two deployments of a run apart."""
    path = scorer.run.path
    if path is not None:
        weights = path / "model.pt"
        if weights.exists():
            return hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    return "unsaved"


# ---------------------------------------------------------------------------------------------- routes


def service_of(request: Request) -> Service:
    return request.app.state.service


async def health_route(request: Request) -> dict[str, str]:
    """Liveness: the model is loaded and the process answers (never waits for a worker)."""
    return {"status": "ok", "model": service_of(request).scorer.model_name}


async def model_route(request: Request) -> dict[str, Any]:
    """What this service serves: model, scenarios, tasks, features, default objective, limits, metrics."""
    return model_info(service_of(request))


async def score_route(request: Request) -> Response:
    """Predictions per task for raw feature records in one scenario."""
    content = await off_loop(request, score)
    return Response(content, media_type="application/json")


async def rank_route(request: Request) -> Response:
    """Score every candidate in one model call, then fill the page slot by slot (ads compete).

    The ``Server-Timing`` header splits the handler's time into parsing and validation, feature encoding,
    model, and page and response building, so a load test can tell model cost from transport.
    """
    content, timing = await off_loop(request, rank)
    return Response(content, media_type="application/json", headers={"Server-Timing": timing.header()})


async def off_loop(request: Request, step: Callable[[Service, bytes, str | None], Any]) -> Any:
    """Read the body, then run ``step`` in a worker thread (at most ``limits.workers`` at once, at most
    ``limits.max_pending`` waiting): parsing, validation and scoring never block the event loop."""
    service = service_of(request)
    if service.pending >= service.limits.max_pending:
        raise ServiceError(503, ["body"], f"the service is busy ({service.pending} requests waiting); retry later",
                           "busy")
    service.pending += 1
    try:
        body = await request.body()
        if service.limiter is None:
            service.limiter = anyio.CapacityLimiter(service.limits.workers)
        return await anyio.to_thread.run_sync(step, service, body, request.headers.get("content-type"),
                                              limiter=service.limiter)
    finally:
        service.pending -= 1


# ---------------------------------------------------------------------------------------- error bodies


async def service_error(_: Request, e: ServiceError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


async def user_error(_: Request, e: MsmtrecError) -> JSONResponse:
    return JSONResponse(ServiceError(422, ["body"], str(e)).body(), status_code=422)


async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
    problems = dedupe([{"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
                       for err in e.errors()])
    first = problems[0] if problems else {"loc": ["body"], "msg": "invalid request", "type": "value_error"}
    return JSONResponse(ServiceError(422, first["loc"], first["msg"], first["type"], problems).body(), status_code=422)


async def unexpected(_: Request, e: Exception) -> JSONResponse:
    log.exception("request failed")
    return JSONResponse({"detail": f"internal error: {type(e).__name__}: {str(e)[:300]}"}, status_code=500)


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
    body = json.dumps(ServiceError(413, ["body"], f"request body over {limit} bytes", "too_large").body())
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body.encode()})


# -------------------------------------------------------------------------------------------------- app


SWITCH_INTERVAL_S = 0.001


def create_app(scorer: Scorer, limits: Limits | None = None) -> FastAPI:
    """The FastAPI application around one loaded run: the routes above, their error bodies and limits."""
    service = Service.load(scorer, limits)
    # a worker thread running Python yields the interpreter lock to the event loop after this long (default
    # 5 ms): /health and body reading wait at most about this for a request being validated or encoded
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
    app = FastAPI(
        title="msmtrec",
        version=__version__,
        description="Multi-scenario, multi-task scoring and ranking for one trained run.",
    )
    app.add_middleware(BodyLimit, limit=service.limits.max_body_bytes)
    app.state.service = service
    app.state.scorer = scorer
    app.state.limits = service.limits
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(MsmtrecError, user_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)
    errors = {status: {"model": ErrorResponse} for status in (400, 413, 415, 422, 503)}
    app.add_api_route("/health", health_route, methods=["GET"])
    app.add_api_route("/v1/model", model_route, methods=["GET"])
    app.add_api_route("/v1/score", score_route, methods=["POST"], openapi_extra=_body("ScoreRequest"),
                      responses={200: {"model": ScoreResponse}, **errors})
    app.add_api_route("/v1/rank", rank_route, methods=["POST"], openapi_extra=_body("RankRequest"),
                      responses={200: {"model": RankResponse}, **errors})
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _body(name: str) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its body itself (to parse it off the event loop)."""
    schema = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the request models, which it cannot see in routes that read raw bodies."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _, defs = models_json_schema([(ScoreRequest, "validation"), (RankRequest, "validation")],
                                     ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs.get("$defs", {}))
        components["CandidateIn"] = TypeAdapter(CandidateIn).json_schema()  # RankRequest.candidates refers to it
        app.openapi_schema = schema
    return app.openapi_schema
