"""`POST /v1/traces`: an OTLP/HTTP trace receiver whose LLM spans become feedback events.

Point an OpenTelemetry SDK's OTLP/HTTP exporter (protobuf or JSON, plain,
gzip or deflate) at `driftloop serve` with an `ingest` token, and each chat or
completion span (GenAI semantic conventions, current or previous, or
OpenInference) is validated, redacted and stored like any feedback event
(`ingest.otlp`); other spans are counted and dropped. Ratings come later, to
`POST /v1/feedback` with the span's `trace_id` (and `span_id`), and join the
event whichever arrives first (`store.traces`).

    $ export OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:8080/v1/traces
    $ export OTEL_EXPORTER_OTLP_TRACES_HEADERS="Authorization=Bearer $TOKEN"

The answer is an `ExportTraceServiceResponse` in the request's encoding; its
`partial_success` counts the spans quarantined (`rejected_spans`) and its
`error_message` says what happened to every span. Decoding and mapping run in
`api.traces.parse_workers` processes where set (`parsepool`); the writes go
through the app's single writer (`writer`), committed before the answer. A body that is not an OTLP
export gets 400 (415 for another content type or encoding, 413 over
`api.traces.max_body_bytes`), never a 5xx.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from driftloop.app.api.auth import require_scope
from driftloop.app.api.bodies import read_body
from driftloop.app.api.deps import ConfigDep, ParsePoolDep, ParserDep, QuarantineWatchDep, StoreDep, WriterDep
from driftloop.core.config_ingest import FieldMapping
from driftloop.core.types import FeedbackEvent
from driftloop.ingest.otlp import JSON, PROTOBUF, DroppedSpan, OtlpError, decode_request, spans
from driftloop.ingest.pipeline import RowParser
from driftloop.ingest.rows import RowError
from driftloop.store import Store
from driftloop.store.batch import Batch, QuarantineRow
from driftloop.store.traces import SpanLink, expire_ratings_in, link_spans_in

SOURCE = "http:/v1/traces"
router = APIRouter()
_LOG = logging.getLogger("driftloop.app.api")


@dataclass
class SpanOutcome:
    """What one export request did: every span accepted, a duplicate, quarantined or dropped."""

    spans: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    joined: int = 0
    expired: int = 0

    def message(self) -> str:
        """One line for `partial_success.error_message` and the log."""
        s = (
            f"spans {self.spans}: accepted {self.accepted}, duplicates {self.duplicates}, "
            f"quarantined {self.quarantined}, dropped {sum(self.dropped.values())}"
        )
        problems = self.reasons + self.dropped
        if problems:
            s += " (" + "; ".join(f"{k} x{n}" for k, n in problems.most_common(5)) + ")"
        if self.joined:
            s += f"; ratings joined {self.joined}"
        return s


def span_parser(cfg: Any, parser: RowParser) -> RowParser:
    """The parser of mapped spans: the feedback format as is, the API's redaction and segment bounds."""
    m = cfg.api.mapping
    mapping = FieldMapping(segment_max_keys=m.segment_max_keys, segment_value_max_chars=m.segment_value_max_chars)
    return RowParser(mapping, parser.redactor.fork(), id_namespace=SOURCE)


@dataclass
class ParsedSpans:
    """An export request mapped, validated and redacted: the batch to store (prepared) and the span links."""

    out: SpanOutcome
    batch: Batch
    links: list[SpanLink]


def parse_spans(cfg: Any, parser: RowParser, store: Store, req: Any) -> ParsedSpans:
    """Map, validate and redact the LLM spans of one export request; count the others."""
    out = SpanOutcome()
    parser = span_parser(cfg, parser)
    parse = parser.event_function()  # with the settings looked up once
    events: list[FeedbackEvent] = []
    quarantine: list[QuarantineRow] = []
    links: list[SpanLink] = []
    for item in spans(req, cfg.api.traces):
        out.spans += 1
        if isinstance(item, DroppedSpan):
            out.dropped[item.reason] += 1
            continue
        try:
            e = parse(item.row, SOURCE)
        except RowError as err:
            out.reasons[err.key] += 1
            raw = json.dumps(item.row, ensure_ascii=False, default=str)
            quarantine.append(parser.quarantine(raw, err, SOURCE))
            continue
        events.append(e)
        links.append(SpanLink(item.trace_id, item.span_id, e.event_id, item.ended))
    out.quarantined = len(quarantine)
    # Encoded here, off the writer's thread: the writer only runs the inserts.
    batch = store.prepare(Batch(SOURCE, events, quarantine, id_namespace=parser.id_namespace))
    return ParsedSpans(out, batch, links)


def write_spans(store: Store, p: ParsedSpans, window_s: float, conn: Connection) -> SpanOutcome:
    """Store the parsed spans and their links, join waiting ratings, expire old ones (in the writer's transaction)."""
    out = p.out
    out.accepted, out.duplicates = store.write_batch_in(conn, p.batch)
    out.joined = link_spans_in(conn, p.links, SOURCE)
    out.expired = expire_ratings_in(conn, window_s)
    return out


def decode_and_parse(
    cfg: Any, parser: RowParser, store: Store, body: bytes, ctype: str, encoding: str
) -> ParsedSpans | OtlpError:
    """A request body decoded and its spans parsed (`parse_spans`), or why it is not an OTLP export."""
    limit = cfg.api.traces.max_body_bytes
    try:
        req = decode_request(body, ctype, encoding, limit)
    except OtlpError as e:
        return e
    return parse_spans(cfg, parser, store, req)


@router.post(
    "/v1/traces",
    dependencies=[Depends(require_scope("ingest"))],
    response_class=Response,
    responses={
        200: {
            "description": "An OTLP ExportTraceServiceResponse, in the request's encoding.",
            "content": {PROTOBUF: {}, JSON: {}},
        }
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "An OTLP ExportTraceServiceRequest (protobuf or OTLP/JSON; Content-Encoding gzip or deflate allowed).",
            "content": {
                PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                JSON: {"schema": {"type": "object"}},
            },
        }
    },
)
async def post_traces(
    request: Request,
    cfg: ConfigDep,
    parser: ParserDep,
    store: StoreDep,
    watch: QuarantineWatchDep,
    writer: WriterDep,
    pool: ParsePoolDep,
) -> Response:
    """Store the chat and completion spans of an OTLP export as feedback events; drop the other spans."""
    body = await read_body(request, cfg.api.traces.max_body_bytes)
    ctype = request.headers.get("content-type", "")
    encoding = request.headers.get("content-encoding", "")
    # Decoding and mapping are CPU work: in a parse worker process (api.traces.parse_workers), else off the
    # event loop in this one. The writes join the writer's next transaction.
    parsed = await pool.run(body, ctype, encoding) if pool is not None else None
    if parsed is None:
        parsed = await run_in_threadpool(decode_and_parse, cfg, parser, store, body, ctype, encoding)
    if isinstance(parsed, OtlpError):
        _LOG.info("POST /v1/traces: %s", parsed.reason)
        raise HTTPException(parsed.status, parsed.reason)
    out = await writer.run(partial(write_spans, store, parsed, cfg.api.traces.join_window_seconds))
    watch.add(out.accepted, out.duplicates, out.quarantined, out.reasons)
    _LOG.info("POST /v1/traces: %s", out.message())
    answer = ExportTraceServiceResponse()
    if out.quarantined or out.dropped:
        answer.partial_success.rejected_spans = out.quarantined
        answer.partial_success.error_message = out.message()
    if ctype.split(";")[0].strip().lower() == JSON:
        return Response(json.dumps(json_format.MessageToDict(answer)), media_type=JSON)
    return Response(answer.SerializeToString(), media_type=PROTOBUF)
