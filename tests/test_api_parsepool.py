"""POST /v1/traces with `api.traces.parse_workers`: bodies decoded and mapped in a worker process give
the same answers and rows as in the API process; a malformed body is a 400; a worker that dies costs no
request (the request is parsed in the API process and the pool replaced)."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from driftloop.app.api import create_app
from driftloop.core.config import load_config
from driftloop.store import Store

TOKEN = "t0ken-for-the-parse-pool"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-protobuf"}


def export(n: int) -> bytes:
    """An export of two spans: chat `n` (stored) and an HTTP span (dropped)."""

    def kv(k: str, v: str) -> KeyValue:
        return KeyValue(key=k, value=AnyValue(string_value=v))

    chat = [
        kv("gen_ai.operation.name", "chat"),
        kv("gen_ai.request.model", "gpt-4o"),
        kv("gen_ai.input.messages", json.dumps([{"role": "user", "content": f"question {n}, mail ann@example.com"}])),
        kv("gen_ai.output.messages", json.dumps([{"role": "assistant", "content": "an answer"}])),
    ]
    spans = [
        Span(
            trace_id=bytes([n + 1]) * 16,
            span_id=b"\x0a" * 8,
            name="chat",
            attributes=chat,
            start_time_unix_nano=1_790_000_000_000_000_000,
            end_time_unix_nano=1_790_000_001_000_000_000,
        ),
        Span(
            trace_id=bytes([n + 1]) * 16,
            span_id=b"\x0b" * 8,
            name="GET /x",
            attributes=[kv("http.request.method", "GET")],
        ),
    ]
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])
    return req.SerializeToString()


def summary(r) -> str:
    assert r.status_code == 200, r.text
    return ExportTraceServiceResponse.FromString(r.content).partial_success.error_message


def test_spans_parsed_in_a_worker_are_stored_and_a_dead_worker_costs_no_request(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.migrate()
    cfg = load_config(
        None, env={}, check_files=False, overrides={"api": {"token": TOKEN, "traces": {"parse_workers": 1}}}
    )
    app = create_app(cfg, store=store)
    with TestClient(app) as client:
        pool = app.state.parse_pool
        assert pool is not None and len(pool._pool._processes) == 1  # started with the app
        want = "spans 2: accepted 1, duplicates 0, quarantined 0, dropped 1 (not a GenAI or OpenInference span x1)"
        assert summary(client.post("/v1/traces", content=export(1), headers=HEADERS)) == want
        bad = client.post("/v1/traces", content=b"\x0a\xff\xff\x03broken", headers=HEADERS)
        assert bad.status_code == 400 and "malformed OTLP protobuf" in bad.json()["detail"]

        for proc in list(pool._pool._processes.values()):
            proc.kill()
            proc.join(10)
        # The request that meets the dead worker is parsed here; the next one gets a new worker.
        assert summary(client.post("/v1/traces", content=export(2), headers=HEADERS)) == want
        assert summary(client.post("/v1/traces", content=export(3), headers=HEADERS)) == want
        assert len(pool._pool._processes) == 1
    rows = [p for (p,) in store.engine.connect().exec_driver_sql("SELECT prompt FROM feedback ORDER BY prompt")]
    assert rows == [f"question {n}, mail [EMAIL]" for n in (1, 2, 3)]  # redacted in the worker too
    store.close()


SERVE = """
import sys, uvicorn
from driftloop.app.api import create_app
from driftloop.core.config import load_config
from driftloop.store import Store
store = Store(sys.argv[1]); store.migrate()
api = {"token": sys.argv[3], "traces": {"parse_workers": 2}}
cfg = load_config(None, env={}, check_files=False, overrides={"api": api})
uvicorn.run(create_app(cfg, store=store), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def test_workers_exit_when_the_api_process_is_killed(tmp_path):
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SERVE, f"sqlite:///{tmp_path / 'store.db'}", str(port), TOKEN])
    try:
        deadline = time.monotonic() + 60
        while True:  # the app listens once its workers are up (they start in its lifespan)
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) >= 2  # the two workers (and multiprocessing's resource tracker)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{c}").exists() and "zombie" not in Path(f"/proc/{c}/status").read_text() for c in children):
        assert time.monotonic() < deadline, f"worker processes left behind: {children}"
        time.sleep(0.2)
