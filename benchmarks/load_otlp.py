"""Load test, bounded and on loopback only: 20 OTLP/HTTP exporters POST batches of spans to /v1/traces.

Starts `driftloop serve`'s app (uvicorn with the `api.limits` options) in a
child process on 127.0.0.1 with a fresh SQLite store (or `--store-url`), then
runs `--exporters` concurrent aiohttp clients that each POST `--batches`
ExportTraceServiceRequests of `--spans` spans, protobuf-encoded as the
OpenTelemetry SDK's OTLP/HTTP exporter sends them (built with the
opentelemetry-proto messages). A batch mixes what an instrumented LLM app
exports: GenAI chat spans (current conventions, messages as attributes, and
previous ones, indexed attributes), OpenInference LLM spans, spans that are not
LLM calls (HTTP and database spans, OpenInference chains, GenAI embeddings:
dropped with a reason) and chat spans recorded without content (quarantined).
Span ids are random-looking, as the SDK's are; the few LLM spans whose hex id
the redactor takes for a card number are quarantined too, and counted apart
(`llm_spans_quarantined_for_their_id`). Every 10th batch repeats the one before (an exporter's retry: duplicates), and
each exporter also sends `--malformed` bodies that are not OTLP (400).

Checks: no 5xx; every well-formed request got 200 and every malformed one 400;
each answer's counts (`partial_success`: rejected spans and the per-span
summary) equal what was sent; the store holds exactly the unique LLM spans as
events and the unique quarantined spans; and over the whole run
accepted + duplicates + quarantined + dropped = spans sent. Prints spans/s, the
CPU seconds of the server process (its parse workers included) and of the
clients, and the load average.

    .venv/bin/python benchmarks/load_otlp.py                  # 20 exporters x 10 batches of 512 spans
    .venv/bin/python benchmarks/load_otlp.py --parse-workers 2  # api.traces.parse_workers: 2
    .venv/bin/python benchmarks/load_otlp.py --gzip           # Content-Encoding: gzip, as OTEL_EXPORTER_OTLP_COMPRESSION=gzip
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadserver import ServedApp, load_summary, own_cpu_s  # noqa: E402

from driftloop.ingest.redact import Redactor  # noqa: E402

FLAGS = Redactor().flags
TOKEN = "load-test-token-0123456789"
T0 = 1_790_000_000_000_000_000  # ns: 2026-09-21
SUMMARY = re.compile(r"spans (\d+): accepted (\d+), duplicates (\d+), quarantined (\d+), dropped (\d+)")
KINDS = ("gen_ai", "gen_ai_previous", "openinference", "http", "db", "chain", "embeddings", "no_content")
# Of every 100 spans: 40 current GenAI chats, 10 previous-convention, 20 OpenInference LLM calls,
# 12 HTTP, 8 database, 4 chains, 4 embeddings (dropped), 2 chats without content (quarantined).
MIX = (40, 10, 20, 12, 8, 4, 4, 2)
STORED, DROPPED = {"gen_ai", "gen_ai_previous", "openinference"}, {"http", "db", "chain", "embeddings"}


@dataclass
class Expect:
    """What one request should do to its spans."""

    body: bytes
    spans: int = 0
    stored: int = 0  # new LLM events
    duplicates: int = 0
    quarantined: int = 0
    dropped: int = 0
    malformed: bool = False
    id_flagged: int = 0  # LLM spans quarantined because their id looks like a card number


def _kv(key: str, value: object):
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    if isinstance(value, bool):
        v = AnyValue(bool_value=value)
    elif isinstance(value, int):
        v = AnyValue(int_value=value)
    else:
        v = AnyValue(string_value=str(value))
    return KeyValue(key=key, value=v)


def span_attributes(kind: str, n: int) -> list:
    """Attributes of span `n` of `kind`, as the instrumentations record them."""
    q, a = f"where is parcel {n}? it left on monday", f"parcel {n} is on its way and arrives tomorrow"
    if kind == "gen_ai":
        inputs = [
            {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
            {"role": "user", "parts": [{"type": "text", "content": q}]},
        ]
        outputs = [{"role": "assistant", "parts": [{"type": "text", "content": a}], "finish_reason": "stop"}]
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 12 + n % 50,
            "gen_ai.usage.output_tokens": 7 + n % 30,
            "gen_ai.conversation.id": f"conv-{n // 4}",
            "gen_ai.input.messages": json.dumps(inputs),
            "gen_ai.output.messages": json.dumps(outputs),
            "server.address": "api.openai.com",
        }
    elif kind == "gen_ai_previous":
        attrs = {
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": "claude-3-5-haiku",
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": q,
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": a,
            "gen_ai.usage.prompt_tokens": 20,
            "gen_ai.usage.completion_tokens": 9,
        }
    elif kind == "openinference":
        attrs = {
            "openinference.span.kind": "LLM",
            "input.value": json.dumps({"messages": [{"role": "user", "content": q}]}),
            "input.mime_type": "application/json",
            "output.value": a,
            "llm.model_name": "gpt-4o-mini",
            "llm.token_count.prompt": 5,
            "llm.token_count.completion": 4,
            "session.id": f"s-{n // 3}",
        }
    elif kind == "http":
        attrs = {"http.request.method": "GET", "url.path": f"/orders/{n}", "http.response.status_code": 200}
    elif kind == "db":
        attrs = {"db.system.name": "postgresql", "db.query.text": "SELECT * FROM orders WHERE id = $1"}
    elif kind == "chain":
        attrs = {"openinference.span.kind": "CHAIN", "input.value": q}
    elif kind == "embeddings":
        attrs = {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "text-embedding-3-small"}
    else:  # no_content: a chat recorded with content capture off has no prompt
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}
    return [_kv(k, v) for k, v in attrs.items()]


def request(exporter: int, b: int, size: int, compress: bool) -> Expect:
    """Batch `b` of exporter `exporter`: an ExportTraceServiceRequest of `size` spans, and what it should do."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    k = b - 1 if b % 10 == 9 else b  # every 10th batch repeats the one before (a retry)
    kinds = [kind for kind, n in zip(KINDS, MIX) for _ in range(n)]
    spans, counts = [], Counter()
    for i in range(size):
        kind = kinds[i % len(kinds)]
        counts[kind] += 1
        n = (exporter * 1000 + k) * size + i
        start = T0 + n * 1_000_000
        spans.append(
            Span(
                trace_id=hashlib.blake2b(b"t%d" % n, digest_size=16).digest(),  # random-looking, as the SDK's
                span_id=hashlib.blake2b(b"s%d" % n, digest_size=8).digest(),
                name=f"{kind} {n}",
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=start,
                end_time_unix_nano=start + 350_000_000,
                attributes=span_attributes(kind, n),
            )
        )
    resource = {"service.name": f"chatbot-{exporter}", "telemetry.sdk.language": "python"}
    req = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource={"attributes": [_kv(key, v) for key, v in resource.items()]},
                scope_spans=[ScopeSpans(scope={"name": "opentelemetry.instrumentation.openai_v2"}, spans=spans)],
            )
        ]
    )
    body = req.SerializeToString()
    # Random 128-bit ids in hex now and then hold a digit run that passes the card check (Luhn): the
    # redactor refuses such an event id, and the span is quarantined (`event_id: holds PII or a secret`).
    flagged = sum(
        1
        for s, i in zip(spans, range(size))
        if kinds[i % len(kinds)] in STORED and FLAGS(f"otel:{s.trace_id.hex()}:{s.span_id.hex()}")
    )
    llm = sum(counts[x] for x in STORED) - flagged
    return Expect(
        gzip.compress(body, 6) if compress else body,
        spans=size,
        stored=0 if k != b else llm,
        duplicates=llm if k != b else 0,
        quarantined=counts["no_content"] + flagged,
        dropped=sum(counts[x] for x in DROPPED),
        id_flagged=flagged,
    )


def malformed(exporter: int, j: int, compress: bool) -> Expect:
    """A body that is not an OTLP export (truncated protobuf: a length running past the end)."""
    body = b"\x0a\xff\xff\x03" + f"broken export {exporter}-{j}".encode()
    return Expect(gzip.compress(body) if compress else body, malformed=True)


async def run_exporters(url: str, plan: list[list[Expect]], compress: bool) -> tuple[Counter, Counter, list[str]]:
    import aiohttp
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    codes, totals, wrong = Counter(), Counter(), []
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-protobuf"}
    if compress:
        headers["Content-Encoding"] = "gzip"

    async def exporter(e: int, http: aiohttp.ClientSession) -> None:
        for j, x in enumerate(plan[e]):
            async with http.post(f"{url}/v1/traces", data=x.body, headers=headers) as r:
                body = await r.read()
                codes[r.status] += 1
            if x.malformed:
                totals["malformed"] += 1
                if r.status != 400:
                    wrong.append(f"exporter {e} request {j}: malformed body got {r.status}")
                continue
            if r.status != 200:
                wrong.append(f"exporter {e} request {j}: {r.status} {body[:200]!r}")
                continue
            answer = ExportTraceServiceResponse.FromString(body)
            m = SUMMARY.match(answer.partial_success.error_message)
            got = tuple(map(int, m.groups())) if m else (x.spans, x.spans, 0, 0, 0)
            want = (x.spans, x.stored, x.duplicates, x.quarantined, x.dropped)
            if got != want or answer.partial_success.rejected_spans != x.quarantined:
                wrong.append(f"exporter {e} request {j}: got {got}, want {want}")
            for key, v in zip(("spans", "accepted", "duplicates", "quarantined", "dropped"), got):
                totals[key] += v

    conn = aiohttp.TCPConnector(limit=len(plan))
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=300)) as http:
        await asyncio.gather(*(exporter(e, http) for e in range(len(plan))))
    return codes, totals, wrong


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exporters", type=int, default=20)
    ap.add_argument("--batches", type=int, default=10, help="export requests per exporter")
    ap.add_argument("--spans", type=int, default=512, help="spans per request (the SDK's default batch)")
    ap.add_argument("--malformed", type=int, default=1, help="bodies per exporter that are not OTLP")
    ap.add_argument("--gzip", action="store_true", help="gzip the bodies (Content-Encoding: gzip)")
    ap.add_argument("--store-url", help="default: a SQLite file in a temporary folder")
    ap.add_argument(
        "--parse-workers", type=int, default=0, help="api.traces.parse_workers of the server (0: in its process)"
    )
    a = ap.parse_args()
    from driftloop.store import Store

    print(f"building {a.exporters} x {a.batches} requests of {a.spans} spans ...", file=sys.stderr)
    plan = []
    for e in range(a.exporters):
        reqs = [request(e, b, a.spans, a.gzip) for b in range(a.batches)]
        for j in range(a.malformed):
            reqs.insert((j + 1) * len(reqs) // (a.malformed + 1), malformed(e, j, a.gzip))
        plan.append(reqs)
    flat = [x for reqs in plan for x in reqs if not x.malformed]
    sent = sum(x.spans for x in flat)
    want_events = sum(x.stored for x in flat)
    # A retried batch quarantines its spans again, but the store keeps one row per distinct content.
    want_quarantine = sum(x.quarantined for x in flat if not x.duplicates)
    with tempfile.TemporaryDirectory(prefix="driftloop-load-") as tmp:
        url = a.store_url or f"sqlite:///{tmp}/store.db"
        load0 = os.getloadavg()[0]
        overrides = {"traces": {"parse_workers": a.parse_workers}} if a.parse_workers else {}
        with ServedApp(url, TOKEN, overrides) as srv:
            cpu0, own0, t = srv.cpu_s(), own_cpu_s(), time.perf_counter()
            codes, totals, wrong = asyncio.run(run_exporters(srv.url, plan, a.gzip))
            seconds = time.perf_counter() - t
            server_cpu, client_cpu = srv.cpu_s() - cpu0, own_cpu_s() - own0
        load1 = os.getloadavg()[0]
        store = Store(url)
        stored, quarantined_rows = store.count_events(), store.count_quarantine()
        backend = store.engine.dialect.name
        store.close()
    five = sum(n for c, n in codes.items() if c >= 500)
    accounted = totals["accepted"] + totals["duplicates"] + totals["quarantined"] + totals["dropped"]
    out = {
        "requests": sum(codes.values()),
        "codes": dict(codes),
        "sent_spans": sent,
        **totals,
        "stored": stored,
        "expected_stored": want_events,
        "llm_spans_quarantined_for_their_id": sum(x.id_flagged for x in flat),
        "quarantine_rows": quarantined_rows,
        "expected_quarantine_rows": want_quarantine,
        "spans_per_s": round(sent / seconds),
        "backend": backend,
        "gzip": a.gzip,
        "parse_workers": a.parse_workers,
        **load_summary(seconds, server_cpu, client_cpu, (load0, load1), sent),
    }
    print(json.dumps(out))
    for w in wrong[:10]:
        print(w, file=sys.stderr)
    ok = (
        five == 0
        and not wrong
        and totals["spans"] == sent == accounted
        and stored == want_events
        and quarantined_rows == want_quarantine
    )
    assert ok, out
    print(
        f"{sent:,} spans in {seconds:.1f} s: {sent / seconds:,.0f} spans/s ({want_events:,} events stored, "
        f"{totals['dropped']:,} spans dropped with a reason, {totals['quarantined']:,} quarantined, "
        f"{totals['malformed']} malformed bodies refused with 400), zero 5xx, every span accounted for; "
        f"server CPU {server_cpu:.1f} s ({sent / server_cpu:,.0f} spans per server CPU second), "
        f"clients {client_cpu:.1f} s, load average {load0:.2f} -> {load1:.2f}"
    )


if __name__ == "__main__":
    main()
