"""POST /v1/traces on a real uvicorn server: spans from the OpenTelemetry SDK's own OTLP/HTTP exporter
(protobuf, gzip) and their OTLP/JSON encoding become feedback events; ratings by trace id join them in
either order; bad bodies and non-LLM spans are counted with a reason, never a 5xx."""

from __future__ import annotations

import base64
import gzip
import json
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text

from driftloop.app.api import create_app
from driftloop.core.config import load_config

TOKEN = "t0ken-for-the-trace-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WINDOW_S = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(store):
    cfg = load_config(
        None,
        env={},
        check_files=False,
        overrides={
            "api": {
                "token": TOKEN,
                "mapping": {"rating_scale": "thumbs"},
                "traces": {
                    "join_window_seconds": WINDOW_S,
                    "segment_attributes": {"session.id": "session", "service.name": "service"},
                },
            }
        },
    )
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(cfg, store=store), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", store
    srv.should_exit = True
    t.join(10)


def llm_spans(tracer) -> dict[str, tuple[str, str]]:
    """Seven spans: four LLM calls in four conventions, an embeddings call, an HTTP span, a chat without content."""
    ids = {}

    def ids_of(name, span):
        c = span.get_span_context()
        ids[name] = (format(c.trace_id, "032x"), format(c.span_id, "016x"))

    with tracer.start_as_current_span("chat gpt-4o") as s:  # current: messages as attributes
        s.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.usage.output_tokens": 7,
                "session.id": "s-1",
                "gen_ai.input.messages": json.dumps(
                    [
                        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
                        {"role": "user", "parts": [{"type": "text", "content": "where is my parcel?"}]},
                    ]
                ),
                "gen_ai.output.messages": json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": "on its way"}],
                            "finish_reason": "stop",
                        }
                    ]
                ),
            }
        )
        ids_of("current", s)
    with tracer.start_as_current_span("chat claude") as s:  # previous: indexed attributes
        s.set_attributes(
            {
                "gen_ai.system": "anthropic",
                "gen_ai.request.model": "claude-3-5-haiku",
                "gen_ai.prompt.0.role": "user",
                "gen_ai.prompt.0.content": "call me on +49 30 901820 or mail ann@example.com",
                "gen_ai.completion.0.role": "assistant",
                "gen_ai.completion.0.content": "will do",
                "gen_ai.usage.prompt_tokens": 20,
                "gen_ai.usage.completion_tokens": 3,
            }
        )
        ids_of("previous", s)
    with tracer.start_as_current_span("chat events") as s:  # events, one per message
        s.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "llama-3"})
        s.add_event("gen_ai.user.message", {"content": "refund please"})
        s.add_event("gen_ai.choice", {"index": 0, "message.content": "refund issued"})
        ids_of("events", s)
    with tracer.start_as_current_span("ChatOpenAI") as s:  # OpenInference
        s.set_attributes(
            {
                "openinference.span.kind": "LLM",
                "input.value": json.dumps({"messages": [{"role": "user", "content": "opening hours?"}]}),
                "input.mime_type": "application/json",
                "output.value": "9 to 5",
                "llm.model_name": "gpt-4o-mini",
                "llm.token_count.prompt": 5,
                "llm.token_count.completion": 4,
                "session.id": "s-2",
            }
        )
        ids_of("openinference", s)
    with tracer.start_as_current_span("embeddings") as s:
        s.set_attributes({"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "text-embedding-3"})
    with tracer.start_as_current_span("GET /orders") as s:
        s.set_attribute("http.request.method", "GET")
    with tracer.start_as_current_span("chat no content") as s:  # content capture off: no prompt
        s.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"})
        ids_of("empty", s)
    return ids


def rate(url: str, body) -> httpx.Response:
    return httpx.post(f"{url}/v1/feedback", json=body, headers=AUTH, timeout=30)


def as_json(v):
    return v if isinstance(v, dict) else json.loads(v)  # PostgreSQL hands JSON back decoded


def rows(store) -> dict[str, dict]:
    with store.engine.connect() as c:
        got = c.execute(text("SELECT * FROM feedback")).mappings().all()
    return {r["event_id"]: dict(r) for r in got}


def test_sdk_spans_become_events_and_ratings_join_in_either_order(server):
    url, store = server
    unknown = {"trace_id": "ab" * 16, "rating": 1}
    r = rate(url, unknown)  # a rating for a trace that never comes
    assert r.status_code == 200 and r.json()["waiting"] == 1
    posted_unknown = time.monotonic()

    capture = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    tracer_provider.add_span_processor(SimpleSpanProcessor(capture))
    ids = llm_spans(tracer_provider.get_tracer("test"))
    captured = capture.get_finished_spans()
    assert len(captured) == 7

    # Rated before its span arrives: waits.
    t, s = ids["current"]
    r = rate(url, {"trace_id": t, "span_id": s, "rating": "down", "correction": "it arrives tomorrow"})
    assert r.status_code == 200 and r.json()["waiting"] == 1 and r.json()["received"] == 1

    # The SDK's own exporter: protobuf, gzip.
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers=AUTH, compression=Compression.Gzip, timeout=30)
    from opentelemetry.sdk.trace.export import SpanExportResult

    assert exporter.export(captured) == SpanExportResult.SUCCESS
    events = rows(store)
    assert set(events) == {f"otel:{t}:{s}" for k, (t, s) in ids.items() if k != "empty"}

    cur = events["otel:{}:{}".format(*ids["current"])]
    assert (cur["prompt"], cur["response"], cur["model_version"]) == (
        "where is my parcel?",
        "on its way",
        "gpt-4o-2024-08-06",
    )
    assert (cur["tokens_in"], cur["tokens_out"]) == (12, 7) and cur["latency_ms"] >= 0
    assert as_json(cur["segment"]) == {"session": "s-1", "service": "support-bot"}
    # The rating that came first joined when the span arrived.
    assert (cur["rating"], cur["thumbs_up"], cur["correction"]) == (0.0, 0, "it arrives tomorrow")

    prev = events["otel:{}:{}".format(*ids["previous"])]
    assert prev["prompt"] == "call me on [PHONE] or mail [EMAIL]" and prev["response"] == "will do"
    assert (prev["model_version"], prev["tokens_in"], prev["tokens_out"]) == ("claude-3-5-haiku", 20, 3)
    ev = events["otel:{}:{}".format(*ids["events"])]
    assert (ev["prompt"], ev["response"]) == ("refund please", "refund issued")
    oi = events["otel:{}:{}".format(*ids["openinference"])]
    assert (oi["prompt"], oi["response"], oi["model_version"], oi["tokens_in"]) == (
        "opening hours?",
        "9 to 5",
        "gpt-4o-mini",
        5,
    )
    assert as_json(oi["segment"])["session"] == "s-2"
    assert oi["rating"] is None

    # Rated after its span: joins at once, by trace id alone.
    r = rate(url, {"trace_id": ids["openinference"][0], "rating": 1})
    assert r.json()["joined"] == 1 and "waiting" not in r.json()
    assert rows(store)["otel:{}:{}".format(*ids["openinference"])]["rating"] == 1.0

    # The chat without content is quarantined with its reason.
    with store.engine.connect() as c:
        q = c.execute(text("SELECT source, field, reason, raw FROM quarantine")).mappings().all()
    assert [(x["source"], x["field"], x["reason"]) for x in q] == [("http:/v1/traces", "prompt", "missing")]
    assert ids["empty"][1] in q[0]["raw"]

    # The same spans in OTLP/JSON (hex ids): all duplicates, counted and explained in the answer.
    doc = json_format.MessageToDict(encode_spans(captured))
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for k in ("traceId", "spanId", "parentSpanId"):
                    if k in sp:
                        sp[k] = base64.b64decode(sp[k]).hex()
    r = httpx.post(
        f"{url}/v1/traces",
        content=json.dumps(doc),
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    msg = partial["errorMessage"]
    assert "spans 7: accepted 0, duplicates 4, quarantined 1, dropped 2" in msg
    assert (
        "not a GenAI or OpenInference span x1" in msg and "not a chat or completion span (gen_ai embeddings) x1" in msg
    )
    assert len(rows(store)) == 4

    # The rating for a trace that never came: quarantined with its reason once the window has passed.
    time.sleep(max(0.0, WINDOW_S + 0.2 - (time.monotonic() - posted_unknown)))
    r = rate(url, {"trace_id": ids["previous"][0], "span_id": ids["previous"][1], "thumbs_up": True})
    assert r.json()["joined"] == 1
    with store.engine.connect() as c:
        q = c.execute(text("SELECT field, reason, raw FROM quarantine WHERE field = 'trace_id'")).mappings().all()
    assert [(x["field"], x["reason"]) for x in q] == [("trace_id", f"no span within the join window ({WINDOW_S:g} s)")]
    assert json.loads(q[0]["raw"])["trace_id"] == "ab" * 16
    assert rows(store)["otel:{}:{}".format(*ids["previous"])]["thumbs_up"] == 1


def test_bad_bodies_get_4xx_with_a_reason_and_store_nothing(server):
    url, store = server
    proto = {**AUTH, "Content-Type": "application/x-protobuf"}
    cases = [
        (b"\x0a\xff\xff\xff\xff\x0f garbage", proto, 400, "malformed OTLP protobuf"),
        (b'{"resourceSpans": [', {**AUTH, "Content-Type": "application/json"}, 400, "malformed JSON"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            {**AUTH, "Content-Type": "application/json"},
            400,
            "not hex",
        ),
        (b"\x00" * 10, {**AUTH, "Content-Type": "text/plain"}, 415, "content type"),
        (b"not gzip", {**proto, "Content-Encoding": "gzip"}, 400, "malformed gzip"),
        (gzip.compress(b"\x00" * (17 * 1024 * 1024)), {**proto, "Content-Encoding": "gzip"}, 413, "decompressed"),
        (b"", {"Content-Type": "application/x-protobuf"}, 401, "bearer"),
    ]
    for body, headers, status, words in cases:
        r = httpx.post(f"{url}/v1/traces", content=body, headers=headers, timeout=30)
        assert r.status_code == status, (words, r.text)
        assert words in r.json()["detail"], r.text
    # An empty export (a valid, empty protobuf) is fine.
    r = httpx.post(f"{url}/v1/traces", content=b"", headers=proto, timeout=30)
    assert r.status_code == 200 and ExportTraceServiceResponse.FromString(r.content).partial_success.rejected_spans == 0
    # Messages nested past any message shape: the span is counted with a reason, the request answered.
    deep = {"key": "gen_ai.input.messages", "value": {"stringValue": "[" * 50_000}}
    span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "startTimeUnixNano": "1", "attributes": [deep]}
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    r = httpx.post(f"{url}/v1/traces", json=doc, headers=AUTH, timeout=30)
    assert (
        r.status_code == 200 and "span: attributes nested too deeply x1" in r.json()["partialSuccess"]["errorMessage"]
    )
    # A rating with a malformed trace id is quarantined like any bad row.
    r = rate(url, {"trace_id": "not-hex", "rating": 1})
    assert r.json()["quarantined"] == 1 and r.json()["reasons"] == {"trace_id: not 32 hex digits": 1}
    assert store.count_events() == 0
