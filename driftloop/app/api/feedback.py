"""`POST /v1/feedback`: one event or a batch, validated, redacted and stored like any source.

The body is a JSON event object, a list of them, or `{"events": [...]}`.
Bodies over `api.max_body_bytes` and batches over `api.max_batch` get 413
before anything is parsed or stored. Every event is accounted for in the
response; a bad one is quarantined with its reason and the others are kept.

    $ curl -H "Authorization: Bearer $TOKEN" -d '[{"ts": "2026-11-01T10:00:00Z", "prompt": "hi"}]' \\
        http://127.0.0.1:8080/v1/feedback
    {"received": 1, "accepted": 1, "duplicates": 0, "quarantined": 0, "reasons": {}, "rejected": [], "redacted": {}}
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from driftloop.app.api.auth import require_scope
from driftloop.app.api.bodies import load_json, read_body
from driftloop.core.types import FeedbackEvent
from driftloop.ingest.pipeline import RowParser
from driftloop.ingest.rows import RowError
from driftloop.store.batch import Batch, QuarantineRow

SOURCE = "http:/v1/feedback"
router = APIRouter()


class Rejected(BaseModel):
    index: int = Field(description="Position of the event in the request (0 for a single event).")
    field: str
    problem: str


class FeedbackResponse(BaseModel):
    received: int = Field(description="Events in the request; always accepted + duplicates + quarantined.")
    accepted: int
    duplicates: int
    quarantined: int
    reasons: dict[str, int] = Field(description="`field: problem` -> how many events were quarantined for it.")
    rejected: list[Rejected] = Field(description="Each quarantined event and why.")
    redacted: dict[str, int] = Field(description="PII replaced before storage, by kind.")


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


def _store(request: Request, rows: list[Any]) -> FeedbackResponse:
    app = request.app
    base: RowParser = app.state.parser
    parser = base.fork()
    events: list[FeedbackEvent] = []
    quarantine: list[QuarantineRow] = []
    rejected: list[Rejected] = []
    reasons: Counter[str] = Counter()
    for i, row in enumerate(rows):
        try:
            events.append(parser.event(row, SOURCE))
        except RowError as e:
            reasons[e.key] += 1
            rejected.append(Rejected(index=i, field=e.field, problem=e.problem))
            quarantine.append(parser.quarantine(json.dumps(row, ensure_ascii=False), e, SOURCE))
    accepted, dups = app.state.store.write_batch(Batch(SOURCE, events, quarantine))
    app.state.quarantine_watch.add(accepted, dups, len(quarantine), reasons)
    return FeedbackResponse(
        received=len(rows),
        accepted=accepted,
        duplicates=dups,
        quarantined=len(quarantine),
        reasons=dict(reasons),
        rejected=rejected,
        redacted=dict(parser.redactor.counts),
    )


@router.post("/v1/feedback", response_model=FeedbackResponse, dependencies=[Depends(require_scope("ingest"))])
async def post_feedback(request: Request) -> FeedbackResponse:
    """Validate, redact and store feedback events; report what happened to each."""
    api = request.app.state.cfg.api
    rows = _events(await _body(request, api.max_body_bytes), api.max_batch)
    # The store is synchronous (SQLAlchemy); run it off the event loop.
    return await run_in_threadpool(_store, request, rows)
