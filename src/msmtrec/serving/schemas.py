"""The service's request and response contract, and the first step of every request: body → validated request.

:func:`read_request` is that step: it checks the content type, parses the bytes, bounds the request's cost by
its shape (numbers of keys, features and candidates, before any per-value work), and validates it against a
model below. Each failure is a :class:`~msmtrec.serving.errors.ServiceError` naming the field, with at most
a few problems in the body.

Parsing uses orjson. Two inputs take the exact (stdlib) parser instead, which costs more but never changes a
value: a body orjson refuses (to report NaN, infinity, bad UTF-8 or the syntax error precisely) and a body
with a run of 20 or more digits (orjson would read an integer beyond 64 bits as a float, silently changing
it; the exact parser keeps it as a marker that validation refuses by name). Both checks, and the count of
values that bounds parsing time, are one pass over the bytes (``bytes.translate``; a regular expression was
ten times slower).

Models are strict: a number field takes numbers only (``true`` is not ``1``), a boolean field booleans only.
Feature values are left untyped here and checked once, while they are encoded
(:class:`msmtrec.data.records.RecordEncoder`), so no value is touched twice.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from typing_extensions import NotRequired, TypedDict

from msmtrec.serving.errors import ServiceError


@dataclass
class Limits:
    """What one request may cost; beyond these the service answers 413 instead of doing unbounded work."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_candidates: int = 5000
    max_records: int = 10000
    max_fields: int = 1000
    """Keys in one feature object (context, a record, a candidate's features) or in objective weights."""
    max_values: int = 100_000
    """JSON values in one body (counted as its commas and colons before parsing: a 1,000-candidate request
    with three item features has about 11,000 as objects, 7,000 as columns). Parsing holds the interpreter
    lock, so this bounds how long one body can hold it, and with it /health's worst latency."""
    workers: int = 1
    """Requests parsed, validated and scored at once (in worker threads, off the event loop)."""
    max_pending: int = 64
    """Requests waiting for a worker; more are refused with 503 rather than queued without bound."""


_FEATURE_VALUE_SCHEMA = {
    "anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
              {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "number"}]}}],
    "description": "A raw feature value as in the training files: text or a number for categorical features, "
                   "a number (or numeric text) for numeric ones, a list for sequence features; null = missing.",
}
FeatureValue = Annotated[Any, WithJsonSchema(_FEATURE_VALUE_SCHEMA)]
"""A raw feature value, checked when it is encoded (see the module docstring)."""
Features = Annotated[dict[str, Any], WithJsonSchema({"type": "object", "additionalProperties": _FEATURE_VALUE_SCHEMA})]
"""Feature name → raw value."""
FeatureRow = Annotated[Any, WithJsonSchema({"type": "object", "additionalProperties": _FEATURE_VALUE_SCHEMA})]
"""One row of features; its values (and that it is an object) are checked when it is encoded."""
NonNegative = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, extra="forbid", strict=True)


class ScoreRequest(_Strict):
    scenario: str | int = Field(description="Scenario value or display name, as in training.")
    records: list[FeatureRow] = Field(min_length=1, description="Raw feature rows.")


class ScoreResponse(BaseModel):
    model: str
    scenario: str
    tasks: list[str]
    predictions: list[dict[str, float]] = Field(description="Per record: probability (binary) or value.")
    oov: dict[str, int] = Field(description="Values that fell into the out-of-vocabulary bucket, per feature.")


# A TypedDict, not a model: pydantic validates it the same way (types, NaN, unknown keys), but a request
# with 1,000 candidates builds 1,000 plain dicts instead of 1,000 model objects, which roughly halves its
# validation time.
class CandidateIn(TypedDict):
    """One candidate: its item features and, for an ad, its bid."""

    __pydantic_config__ = ConfigDict(allow_inf_nan=False, extra="forbid", strict=True)  # type: ignore[misc]
    id: NotRequired[Annotated[str | int | None, Field(description="Echoed back on the page.")]]
    features: NotRequired[Annotated[FeatureRow, Field(description="Item features.")]]
    is_ad: NotRequired[bool]
    bid: NotRequired[Annotated[NonNegative | None, Field(description="Ad bid per click (cpc) or conversion (cpa).")]]
    bid_type: NotRequired[Literal["cpc", "cpa"]]
    price: NotRequired[Annotated[NonNegative | None, Field(description="Item price, used by objective.price_tasks.")]]


CANDIDATE_KEYS = frozenset(CandidateIn.__annotations__) - {"__pydantic_config__"}


class _ColumnOf:
    """``Column[T]``: an optional list whose entries are checked as ``T`` in chunks (see
    :func:`validate_in_chunks`), documented in the OpenAPI schema as a list of ``T``."""

    def __class_getitem__(cls, item: Any) -> Any:
        schema = TypeAdapter(list[item]).json_schema()
        return Annotated[list[Any] | None, WithJsonSchema({"anyOf": [schema, {"type": "null"}]})]


Column = _ColumnOf
_STRICT = ConfigDict(strict=True, allow_inf_nan=False)
_COLUMN_ADAPTERS: dict[str, TypeAdapter] = {
    "id": TypeAdapter(list[str | int | None], config=_STRICT),
    "is_ad": TypeAdapter(list[bool], config=_STRICT),
    "bid": TypeAdapter(list[NonNegative | None], config=_STRICT),
    "bid_type": TypeAdapter(list[Literal["cpc", "cpa"]], config=_STRICT),
    "price": TypeAdapter(list[NonNegative | None], config=_STRICT),
}
_CANDIDATES = TypeAdapter(list[CandidateIn])

CHUNK = 256
"""Long lists are validated this many entries at a time, stopping at the first chunk with a problem: the
cost of a bad list (pydantic builds an object for every error) stays bounded, and no single call holds the
interpreter lock for long."""


def validate_in_chunks(adapter: TypeAdapter, values: list[Any], loc: list[str | int]) -> list[Any]:
    """``values`` validated by ``adapter`` (a list type) chunk by chunk; the first bad chunk is a 422 whose
    locations are the entries' indices in the whole list."""
    out: list[Any] = []
    for start in range(0, len(values), CHUNK):
        try:
            out += adapter.validate_python(values[start:start + CHUNK])
        except ValidationError as e:
            problems = dedupe([_problem(err, [*loc[1:], start]) for err in
                               e.errors(include_url=False, include_context=False)])
            raise ServiceError(422, problems[0]["loc"], problems[0]["msg"], problems[0]["type"], problems,
                               len(problems)) from None
    return out


class CandidateColumns(_Strict):
    """Candidates as columns: one list per field, every list one entry per candidate, in the same order.

    The same information as ``candidates`` in far fewer JSON objects, so it is cheaper to send, parse and
    check: the faster form for long candidate lists (see the load benchmark in docs/serving.md).
    """

    features: Annotated[dict[str, Any], WithJsonSchema({
        "type": "object", "additionalProperties": {"type": "array", "items": _FEATURE_VALUE_SCHEMA}})] = Field(
        default_factory=dict, description="Item features, one list per feature.")
    id: Column[str | int | None] = Field(None, description="Echoed back on the page.")
    is_ad: Column[bool] = Field(None, description="Default: no ads.")
    bid: Column[NonNegative | None] = Field(None, description="Per candidate; needed for ads.")
    bid_type: Column[Literal["cpc", "cpa"]] = Field(None, description="Default: cpc.")
    price: Column[NonNegative | None] = Field(None, description="Default: 1.")

    @field_validator("id", "is_ad", "bid", "bid_type", "price", mode="after")
    @classmethod
    def _entries(cls, values: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        if values is None:
            return None
        return validate_in_chunks(_COLUMN_ADAPTERS[info.field_name], values, ["body", "candidate_columns",
                                                                             info.field_name])

    @model_validator(mode="after")
    def _same_length(self) -> CandidateColumns:
        lengths = {name: len(v) for name in ("id", "is_ad", "bid", "bid_type", "price")
                   if (v := getattr(self, name)) is not None}
        lengths.update({f"features.{k}": len(v) for k, v in self.features.items() if isinstance(v, list)})
        if not lengths:
            raise ValueError("no columns: give at least the ids or one feature list")
        n = Counter(lengths.values()).most_common(1)[0][0]  # the odd one out is named, not the majority
        odd = {name: length for name, length in lengths.items() if length != n}
        if odd:
            shown = ", ".join(f"{name!r} has {length}" for name, length in list(odd.items())[:5])
            more = f" (and {len(odd) - 5} more)" if len(odd) > 5 else ""
            raise ValueError(f"columns of different lengths: {shown} entries{more}, the others {n}; "
                             "every column needs one entry per candidate")
        if n == 0:
            raise ValueError("no candidates: the columns are empty")
        return self

    @property
    def rows(self) -> int:
        for v in (self.id, self.is_ad, self.bid, self.bid_type, self.price, *self.features.values()):
            if isinstance(v, list):
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
    ad_positions: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, max_length=10000, description="1-based positions ads may take (default: any).")


class RankRequest(_Strict):
    scenario: str | int
    context: Features = Field(default_factory=dict, description="User/context features shared by all candidates.")
    candidates: Annotated[list[Any] | None, WithJsonSchema({"anyOf": [
        {"type": "array", "items": {"$ref": "#/components/schemas/CandidateIn"}, "minItems": 1},
        {"type": "null"}]})] = Field(
        None, min_length=1, description="One object per candidate (or send candidate_columns instead)."
    )
    candidate_columns: CandidateColumns | None = Field(
        None, description="The candidates as columns (instead of candidates); cheaper for long lists."
    )
    objective: ObjectiveIn | None = None
    slots: SlotsIn = Field(default_factory=SlotsIn)
    explain: bool = Field(False, description="Return attention and gate weights for page items.")

    @field_validator("candidates", mode="after")
    @classmethod
    def _candidates(cls, values: list[Any] | None) -> list[CandidateIn] | None:
        return None if values is None else validate_in_chunks(_CANDIDATES, values, ["body", "candidates"])

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


class ErrorResponse(BaseModel):
    detail: list[dict[str, Any]] = Field(description="The first few problems: loc (where), msg, type.")
    error_count: int = Field(description="How many problems were found in all.")


# ----------------------------------------------------------------------------------------- body → request

M = TypeVar("M", bound=BaseModel)


def read_request(body: bytes, content_type: str | None, model: type[M], limits: Limits) -> M:
    """The first step of a request: bytes → a validated ``model`` instance, or a :class:`ServiceError`."""
    payload = parse_json(body, content_type, limits)
    check_shape(payload, model, limits)
    return validate(payload, model)


def parse_json(body: bytes, content_type: str | None, limits: Limits | None = None) -> Any:
    """Bytes → JSON values, exactly (see the module docstring); 415 for a body that is not declared JSON,
    413 for one with more than ``limits.max_values`` values (counted in one pass over the bytes)."""
    check_content_type(content_type)
    values, long_run = scan_body(body)
    if limits is not None and values > limits.max_values:
        raise ServiceError(413, ["body"], f"about {values} JSON values; the limit is {limits.max_values}",
                           "too_large")
    if not long_run:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return _parse_exactly(body)


SCAN_BLOCK = 1 << 20
"""Bodies are scanned a megabyte at a time, so the scan never holds the interpreter lock for long."""


def scan_body(body: bytes) -> tuple[int, bool]:
    """How many JSON values the body has (its commas and colons) and whether it has a run of 20 or more
    digits, in one pass over the bytes (``bytes.translate``: digits → "0", "," and ":" → ",", others → " ")."""
    values, long_run = 0, False
    overlap = len(_LONG_RUN) - 1  # a digit run may straddle two blocks
    for start in range(0, len(body), SCAN_BLOCK):
        begin = max(0, start - overlap)
        scan = body[begin:start + SCAN_BLOCK].translate(_SCAN)
        values += scan.count(b",", start - begin)  # the overlap was counted with the previous block
        long_run = long_run or scan.find(_LONG_RUN) >= 0
    return values, long_run


def check_content_type(content_type: str | None) -> None:
    """JSON bodies only: ``application/json`` or any ``+json`` type (no header at all is taken as JSON)."""
    if not content_type:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        charset = re.search(r"charset\s*=\s*\"?([\w-]+)", content_type, re.IGNORECASE)
        if charset is None or charset.group(1).lower() in ("utf-8", "utf8"):
            return
        raise ServiceError(415, ["header", "content-type"],
                           f"charset {charset.group(1)!r} is not supported; send the body as UTF-8", "content_type")
    raise ServiceError(415, ["header", "content-type"],
                       f"content type {media[:100]!r} is not supported; send a JSON body with "
                       "'content-type: application/json'", "content_type")


_SCAN = bytes(48 if 48 <= i <= 57 else 44 if i in (44, 58) else 32 for i in range(256))
_LONG_RUN = b"0" * 20
"""A run of digits that may be an integer orjson would not keep exactly (2**64 has 20 digits)."""

_INT_RANGE = (-(2**63), 2**64 - 1)
"""Integers the service keeps exactly (what orjson reads); others are refused, never rounded."""


class OutOfRange:
    """An integer literal outside :data:`_INT_RANGE`, kept as text so validation can refuse it by name."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"an integer of {len(self.text.lstrip('-'))} digits, outside the 64-bit range"


def _parse_int(text: str) -> int | OutOfRange:
    if len(text.lstrip("-")) > 20:
        return OutOfRange(text)
    value = int(text)
    return value if _INT_RANGE[0] <= value <= _INT_RANGE[1] else OutOfRange(text)


def _parse_exactly(body: bytes) -> Any:
    """The stdlib parser with range-checked integers, for bodies the fast path cannot take as they are."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ServiceError(400, ["body"], f"the body is not valid UTF-8: byte 0x{body[e.start]:02x} at offset "
                                          f"{e.start} ({e.reason}); send JSON encoded as UTF-8", "utf8_error") from None
    try:
        payload = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise ServiceError(422, ["body", e.pos], f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}",
                           "json_invalid") from None
    except RecursionError:
        raise ServiceError(422, ["body"], "malformed JSON: nested too deeply", "json_invalid") from None
    try:
        orjson.dumps(payload)  # a lone surrogate escape ("\ud800") cannot be encoded back into a response
    except orjson.JSONEncodeError as e:
        if "surrogates" in str(e) or "str is not valid UTF-8" in str(e):
            raise ServiceError(400, ["body"], "the body has an escaped lone surrogate (such as \\ud800), which "
                                              "is not a Unicode character", "utf8_error") from None
        # anything else (non-finite numbers, huge integers) is left to validation, which names the field
    return payload


def check_shape(payload: Any, model: type[BaseModel], limits: Limits) -> None:
    """Bound the request's cost before any per-value work: known top-level keys only, and at most
    ``max_candidates`` candidates / ``max_records`` records / ``max_fields`` keys per feature object."""
    if not isinstance(payload, dict):
        return  # validation reports it, in one line
    unknown = [k for k in payload if k not in model.model_fields]
    if unknown:
        problems = [{"loc": ["body", k], "msg": "unknown field; the fields are " + ", ".join(model.model_fields),
                     "type": "extra_forbidden"} for k in unknown[:10]]
        raise ServiceError(422, problems[0]["loc"], problems[0]["msg"], "extra_forbidden", problems, len(unknown))
    _check_mapping(payload.get("context"), ["body", "context"], limits.max_fields, "features")
    objective = payload.get("objective")
    if isinstance(objective, dict):
        _check_mapping(objective.get("weights"), ["body", "objective", "weights"], limits.max_fields, "weights")
        _check_list(objective.get("price_tasks"), ["body", "objective", "price_tasks"], limits.max_fields, "tasks")
    _check_list(payload.get("records"), ["body", "records"], limits.max_records, "records")
    _check_rows(payload.get("records"), "records", limits, None)
    cands = payload.get("candidates")
    _check_list(cands, ["body", "candidates"], limits.max_candidates, "candidates")
    _check_rows(cands, "candidates", limits, CANDIDATE_KEYS)
    cols = payload.get("candidate_columns")
    if isinstance(cols, dict):
        _check_mapping(cols, ["body", "candidate_columns"], len(CandidateColumns.model_fields), "keys")
        _check_mapping(cols.get("features"), ["body", "candidate_columns", "features"], limits.max_fields,
                       "features")
        columns = [v for v in cols.values() if isinstance(v, list)]
        features = cols.get("features")
        if isinstance(features, dict):
            columns += [v for v in features.values() if isinstance(v, list)]
        longest = max(map(len, columns), default=0)
        if longest > limits.max_candidates:
            raise ServiceError(413, ["body", "candidate_columns"],
                               f"{longest} candidates; the limit is {limits.max_candidates}", "too_large")


def _check_list(value: Any, loc: list[str | int], limit: int, what: str) -> None:
    if isinstance(value, list) and len(value) > limit:
        raise ServiceError(413, loc, f"{len(value)} {what}; the limit is {limit}", "too_large")


def _check_mapping(value: Any, loc: list[str | int], limit: int, what: str) -> None:
    if isinstance(value, dict) and len(value) > limit:
        raise ServiceError(413, loc, f"{len(value)} {what}; the limit is {limit}", "too_large")


def _check_rows(rows: Any, what: str, limits: Limits, keys: frozenset[str] | None) -> None:
    """Each row (a record, or a candidate and its features) within the key limits, in one cheap pass."""
    if not isinstance(rows, list):
        return
    for i, row in enumerate(rows):
        if type(row) is not dict:
            continue
        if keys is None:
            _check_mapping(row, ["body", what, i], limits.max_fields, "features")
            continue
        if len(row) > len(keys):
            extra = [k for k in row if k not in keys]
            raise ServiceError(422, ["body", what, i, extra[0]],
                               f"unknown field ({len(extra)} unknown in this candidate); "
                               f"the fields are {', '.join(sorted(keys))}", "extra_forbidden")
        features = row.get("features")
        if type(features) is dict and len(features) > limits.max_fields:
            _check_mapping(features, ["body", what, i, "features"], limits.max_fields, "features")


def validate(payload: Any, model: type[M]) -> M:
    """JSON values → ``model``; a 422 whose body lists the first problems (one per field) and their count."""
    try:
        return model.model_validate(payload)
    except ValidationError as e:
        problems = dedupe([_problem(err) for err in e.errors(include_url=False, include_context=False)])
        first = problems[0]
        raise ServiceError(422, first["loc"], first["msg"], first["type"], problems, len(problems)) from None


def _problem(err: Any, prefix: list[str | int] | None = None) -> dict[str, Any]:
    """One pydantic error as a problem; ``prefix`` (a list's location and a chunk's start) shifts the index."""
    msg = err.get("msg", "")
    value = err.get("input")
    if isinstance(value, OutOfRange):
        msg = f"got {value!r}"
    elif err.get("type") == "float_type" and isinstance(value, bool):
        msg = "Input should be a number, not a boolean"
    loc = list(err.get("loc", ()))
    if prefix is not None:
        *head, start = prefix
        loc = [*head, start + loc[0], *loc[1:]] if loc and isinstance(loc[0], int) else [*head, *loc]
    return {"loc": ["body", *loc], "msg": msg, "type": err.get("type", "")}


def dedupe(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic reports a union mismatch once per member; keep the most telling message per field."""
    seen: dict[tuple, dict[str, Any]] = {}
    for err in errors:
        loc = err["loc"]
        # strip union-member and function-validator suffixes (e.g. "str", "int") from value locations
        while loc and isinstance(loc[-1], str) and (loc[-1] in _UNION_MEMBERS or loc[-1].startswith("literal[")):
            loc = loc[:-1]
        key = tuple(loc)
        if key not in seen or err["type"] == "finite_number":
            seen[key] = {**err, "loc": list(loc)}
    return list(seen.values())


_UNION_MEMBERS = {"str", "bool", "int", "float", "none", "list[union[str,int,float]]"}
