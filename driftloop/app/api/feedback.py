"""`POST /v1/feedback`: one event or a batch, validated, redacted and stored like any source.

The body is a JSON event object, a list of them, or `{"events": [...]}`.
Bodies over `api.max_body_bytes` and batches over `api.max_batch` get 413
before anything is parsed or stored. Every event is accounted for in the
response; a bad one is quarantined with its reason and the others are kept.
An object with a `trace_id` (and optionally a `span_id`) and no `prompt` rates
a traced answer (see `api.traces`): it joins the event of that span, now or
when the span arrives at POST /v1/traces.

    $ curl -H "Authorization: Bearer $TOKEN" -d '[{"ts": "2026-11-01T10:00:00Z", "prompt": "hi"}]' \\
        http://127.0.0.1:8080/v1/feedback
    {"received": 1, "accepted": 1, "duplicates": 0, "quarantined": 0, "reasons": {}, "rejected": [], "redacted": {}}
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, RootModel
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from driftloop.app.api.auth import require_scope
from driftloop.app.api.bodies import documented_body, load_json, read_body
from driftloop.app.api.deps import ConfigDep, ParserDep, QuarantineWatchDep, StoreDep, WriterDep
from driftloop.core.types import FeedbackEvent
from driftloop.ingest.pipeline import RowParser
from driftloop.ingest.ratings import TraceRating, is_rating, parse_rating
from driftloop.ingest.rows import RowError
from driftloop.store import Store
from driftloop.store.batch import Batch, QuarantineRow, Written
from driftloop.store.traces import JoinResult, add_ratings_in, expire_ratings_in

SOURCE = "http:/v1/feedback"
INLINE_ROWS = 100  # requests of at most this many events are parsed on the event loop (about 1 ms)
router = APIRouter()


class FeedbackEventIn(BaseModel):
    """One feedback event as a source sends it, under the field names `api.mapping.fields` gives
    (by default FeedbackEvent's own). Validated row by row after the body is read: a bad event is
    quarantined with its reason, never a 422 for the whole request."""

    model_config = ConfigDict(extra="allow")
    event_id: str | None = Field(
        default=None, description="Unique id; default: a hash of api.id_namespace and the content."
    )
    ts: str | None = Field(
        default=None, description="When the interaction happened (ISO 8601 with a timezone); required."
    )
    model_version: str | None = Field(default=None, description="Registry version (or tag) that served the response.")
    prompt: str | None = Field(default=None, description="Required.")
    response: str | None = None
    rating: float | int | str | bool | None = Field(
        default=None, description="On the scale of api.mapping.rating_scale."
    )
    thumbs_up: bool | None = None
    correction: str | None = Field(default=None, description="The ideal response, where the user gave one.")
    latency_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    metadata: dict[str, Any] | None = None
    trace_id: str | None = Field(
        default=None,
        description="Rate a traced answer: the W3C trace id (32 hex digits) of its span, or an MLflow trace id. Without a prompt the object is a rating of that span's event.",
    )
    span_id: str | None = Field(
        default=None, description="With trace_id: the span (16 hex digits); default: the trace's span that ended last."
    )


class FeedbackBatch(BaseModel):
    """A batch of events wrapped in an object."""

    model_config = ConfigDict(extra="forbid")
    events: list[FeedbackEventIn]


class FeedbackRequest(RootModel[FeedbackEventIn | list[FeedbackEventIn] | FeedbackBatch]):
    """The body of POST /v1/feedback: one event, a list of them, or `{"events": [...]}`
    (at most api.max_batch events and api.max_body_bytes bytes)."""


class Rejected(BaseModel):
    index: int = Field(description="Position of the event in the request (0 for a single event).")
    field: str
    problem: str


class FeedbackResponse(BaseModel):
    received: int = Field(
        description="Objects in the request; always accepted + duplicates + quarantined + joined + waiting."
    )
    accepted: int
    duplicates: int
    quarantined: int
    reasons: dict[str, int] = Field(description="`field: problem` -> how many events were quarantined for it.")
    rejected: list[Rejected] = Field(description="Each quarantined event and why.")
    redacted: dict[str, int] = Field(description="PII replaced before storage, by kind.")
    joined: int = Field(default=0, description="Ratings by trace id applied to their span's stored event.")
    waiting: int = Field(
        default=0,
        description="Ratings by trace id whose span has not arrived yet (kept for api.traces.join_window_seconds).",
    )


_body = read_body  # the name other routers import


def _events(body: bytes, max_batch: int) -> list[Any]:
    doc = load_json(body)
    if isinstance(doc, dict) and isinstance(doc.get("events"), list) and len(doc) == 1:
        doc = doc["events"]
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list):
        raise HTTPException(422, 'body: must be an event object, a list of them, or {"events": [...]}')
    if len(doc) > max_batch:
        raise HTTPException(413, f"batch of {len(doc)} events is over the limit of {max_batch}")
    return doc


@dataclass
class Parsed:
    """A request's rows, parsed and redacted: the batch to store (prepared), ratings, and what was quarantined."""

    received: int
    batch: Batch
    ratings: list[TraceRating]
    rejected: list[Rejected]
    reasons: Counter[str]
    redacted: dict[str, int]


def _parse(parser: RowParser, store: Store, rows: list[Any]) -> Parsed:
    parser = parser.fork()
    events: list[FeedbackEvent] = []
    quarantine: list[QuarantineRow] = []
    rejected: list[Rejected] = []
    reasons: Counter[str] = Counter()
    ratings: list[TraceRating] = []
    parse = parser.event_function()  # with the settings looked up once
    for i, row in enumerate(rows):
        try:
            rated = _rating_row(parser, row)
            if rated is not None:
                ratings.append(parse_rating(rated, parser.mapping.rating_scale, parser.redactor))
                continue
            events.append(parse(row, SOURCE))
        except RowError as e:
            reasons[e.key] += 1
            rejected.append(Rejected(index=i, field=e.field, problem=e.problem))
            quarantine.append(parser.quarantine(json.dumps(row, ensure_ascii=False), e, SOURCE))
    # Encoded here, off the writer's thread: the writer only runs the inserts.
    batch = store.prepare(Batch(SOURCE, events, quarantine, id_namespace=parser.id_namespace))
    return Parsed(len(rows), batch, ratings, rejected, reasons, dict(parser.redactor.counts))


def _write(store: Store, p: Parsed, window_s: float, conn: Connection) -> tuple[Written, JoinResult]:
    """The request's writes, inside the writer's transaction."""
    written = store.write_batch_in(conn, p.batch)
    joined = add_ratings_in(conn, p.ratings, SOURCE)
    if p.ratings:
        expire_ratings_in(conn, window_s)
    return written, joined


def _response(p: Parsed, written: Written, joined: JoinResult) -> FeedbackResponse:
    return FeedbackResponse(
        received=p.received,
        accepted=written.accepted,
        duplicates=written.duplicates,
        quarantined=len(p.batch.quarantine),
        reasons=dict(p.reasons),
        rejected=p.rejected,
        redacted=p.redacted,
        joined=joined.joined,
        waiting=joined.waiting,
    )


def _rating_row(parser: RowParser, row: Any) -> dict[str, Any] | None:
    """The row with the API mapping's names given back their field names, where it rates a trace; else None."""
    if not isinstance(row, dict) or "trace_id" not in row:
        return None
    named = dict(row)
    for fname, name in parser.mapping.fields.items():
        if name in named and name != fname:
            named[fname] = named.pop(name)
    return named if is_rating(named) else None


@router.post(
    "/v1/feedback",
    response_model=FeedbackResponse,
    response_model_exclude_defaults=True,  # joined and waiting appear where a request rated traces
    dependencies=[Depends(require_scope("ingest"))],
    openapi_extra=documented_body(FeedbackRequest),
)
async def post_feedback(
    request: Request,
    cfg: ConfigDep,
    parser: ParserDep,
    store: StoreDep,
    watch: QuarantineWatchDep,
    writer: WriterDep,
) -> Response:
    """Validate, redact and store feedback events; report what happened to each."""
    rows = _events(await _body(request, cfg.api.max_body_bytes), cfg.api.max_batch)
    # Parsing is CPU work: a large batch is parsed off the event loop; a small one costs less than the
    # thread pool's hop. The writes join the writer's next transaction.
    if len(rows) > INLINE_ROWS:
        parsed = await run_in_threadpool(_parse, parser, store, rows)
    else:
        parsed = _parse(parser, store, rows)
    written, joined = await writer.run(partial(_write, store, parsed, cfg.api.traces.join_window_seconds))
    watch.add(written.accepted, written.duplicates, len(parsed.batch.quarantine), parsed.reasons)
    # Serialised here, as response_model_exclude_defaults would: FastAPI would validate the model again first.
    body = _response(parsed, written, joined).model_dump_json(exclude_defaults=True)
    return Response(body, media_type="application/json")
