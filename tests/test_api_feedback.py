"""POST /v1/feedback on a real uvicorn server on loopback: auth, limits, accounting, redaction, load."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import uvicorn
from sqlalchemy import text

from driftloop.app.api import create_app
from driftloop.core.config import load_config
from driftloop.core.errors import ConfigError

TOKEN = "t0ken-for-the-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TS = "2026-11-01T10:00:00+00:00"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def event(i: int, **kw) -> dict:
    return {"event_id": f"h{i}", "ts": TS, "prompt": f"question {i}", "response": "answer", "rating": 5, **kw}


@pytest.fixture
def server(store):
    """(base URL, store) of a uvicorn server running the app in a thread."""
    cfg = load_config(
        None,
        env={},
        check_files=False,
        overrides={
            "api": {
                "token": TOKEN,
                "max_body_bytes": 64 * 1024,
                "max_batch": 50,
                "mapping": {"fields": {"prompt": "q"}, "rating_scale": "thumbs"},
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


def post(url: str, body, headers=AUTH, **kw) -> httpx.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(
        f"{url}/v1/feedback", content=data, headers={**headers, "Content-Type": "application/json"}, timeout=30, **kw
    )


def test_missing_or_wrong_token_gets_401_and_stores_nothing(server):
    url, store = server
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}):
        r = post(url, {"ts": TS, "q": "hi"}, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert store.count_events() == 0 and store.count_quarantine() == 0


def test_bodies_and_batches_over_the_limits_get_413_and_store_nothing(server):
    url, store = server
    assert post(url, [event(i, q="x" * 2000) for i in range(40)]).status_code == 413  # 80 KB > 64 KiB
    assert post(url, [event(i) for i in range(51)]).status_code == 413  # 51 > 50 events

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b"["
        for i in range(100):
            yield (json.dumps(event(i, q="y" * 1000)) + ",").encode()
        yield b"{}]"

    r = httpx.post(f"{url}/v1/feedback", content=chunks(), headers=AUTH, timeout=30)
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert store.count_events() == 0 and store.count_quarantine() == 0


def test_one_event_and_a_batch_are_accounted_for_with_reasons(server):
    url, store = server
    one = post(url, {"event_id": "solo", "ts": TS, "q": "mapped prompt", "rating": "up"})
    assert one.status_code == 200
    assert one.json() == {
        "received": 1,
        "accepted": 1,
        "duplicates": 0,
        "quarantined": 0,
        "reasons": {},
        "rejected": [],
        "redacted": {},
    }
    batch = [
        {"event_id": "a", "ts": TS, "q": "p1", "rating": "down"},
        {"event_id": "solo", "ts": TS, "q": "mapped prompt", "rating": "up"},  # duplicate of the first call
        {"event_id": "b", "ts": "2026-11-01T10:00:00", "q": "naive"},  # no timezone
        {"event_id": "c", "ts": TS, "q": "p2", "rating": "sideways"},  # not a thumbs value
        "not an object",
        {"event_id": "a", "ts": TS, "q": "p1", "rating": "down"},
    ]  # duplicate inside the batch
    r = post(url, {"events": batch}).json()
    assert (r["received"], r["accepted"], r["duplicates"], r["quarantined"]) == (6, 1, 2, 3)
    assert r["reasons"] == {
        "ts: no timezone": 1,
        "rating: not a thumbs value (up/down, true/false, 1/0)": 1,
        "(row): not a JSON object": 1,
    }
    assert [(x["index"], x["field"]) for x in r["rejected"]] == [(2, "ts"), (3, "rating"), (4, "(row)")]
    assert store.count_events() == 2 and store.count_quarantine() == 3
    with store.engine.connect() as c:
        assert c.execute(text("SELECT rating, thumbs_up, rating_raw FROM feedback WHERE event_id = 'a'")).one() == (
            0.0,
            False,
            "down",
        )


def test_malformed_bodies_get_4xx_and_pii_is_redacted_before_storage(server):
    url, store = server
    assert post(url, b'{"ts": ').status_code == 400
    assert post(url, b'"\xff"').status_code == 400
    assert post(url, b"42").status_code == 422
    r = post(
        url,
        [
            {
                "ts": TS,
                "q": "reach me at jo@example.org or 192.0.2.44",
                "rating": "up",
                "segment": {"user": "jo@example.org"},
            },
            {"ts": TS, "q": "jo@example.org", "rating": 7},
        ],
    )
    assert r.json()["redacted"] == {"email": 3, "ip": 1} and r.json()["quarantined"] == 1
    with store.engine.connect() as c:
        rows = c.execute(text("SELECT prompt, segment FROM feedback")).all()
        raw = c.execute(text("SELECT raw FROM quarantine")).scalar_one()
    assert rows[0][0] == "reach me at [EMAIL] or [IP]" and "example.org" not in str(rows) + raw


def test_concurrent_clients_lose_nothing_and_get_no_5xx(server):
    url, store = server
    clients, batches, size = 10, 10, 20  # the full 50 x 100 run is benchmarks/load_feedback.py

    async def client(c: int, http: httpx.AsyncClient) -> list[int]:
        codes = []
        for b in range(batches):
            # Every 5th batch repeats the previous one: those events are duplicates.
            k = b - 1 if b % 5 == 4 else b
            rows = [event(f"{c}-{k}-{i}", q="p", rating="up") for i in range(size)]
            r = await http.post(f"{url}/v1/feedback", json=rows, headers=AUTH)
            codes.append(r.status_code)
            assert r.json()["received"] == size and r.json()["quarantined"] == 0
        return codes

    async def main() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as http:
            return sum(await asyncio.gather(*(client(c, http) for c in range(clients))), [])

    codes = asyncio.run(main())
    assert codes == [200] * clients * batches
    assert store.count_events() == clients * (batches - batches // 5) * size


def test_create_app_refuses_to_run_without_a_token(sqlite_store):
    cfg = load_config(None, env={}, check_files=False)
    with pytest.raises(ConfigError, match="api.token: not set"):
        create_app(cfg, store=sqlite_store)


def test_driftloop_serve_takes_its_token_from_the_environment(tmp_path):
    port = free_port()
    (tmp_path / "driftloop.yaml").write_text(f"api:\n  port: {port}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
    cmd = [sys.executable, "-m", "driftloop.app.cli", "--config", str(tmp_path / "driftloop.yaml"), "serve"]
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "api.token: not set" in bad.stderr + bad.stdout
    proc = subprocess.Popen(
        cmd, env={**env, "DRIFTLOOP_API__TOKEN": TOKEN}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = post(f"http://127.0.0.1:{port}", event(1, prompt="hi"))
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["accepted"] == 1
        assert post(f"http://127.0.0.1:{port}", event(2), headers={}).status_code == 401
    finally:
        proc.terminate()
        proc.wait(20)
    assert (tmp_path / ".driftloop" / "store.db").exists()


def test_an_event_without_the_mapped_field_is_rejected_naming_it(server):
    url, store = server
    r = post(
        url,
        [
            {"event_id": "m1", "ts": TS, "prompt": "under its own name", "rating": "up"},  # the mapping says q
            {"event_id": "m2", "ts": TS, "q": "mapped prompt"},
        ],
    ).json()  # no rating: optional
    assert (r["received"], r["accepted"], r["quarantined"]) == (2, 1, 1)
    assert r["reasons"] == {"prompt: mapped field 'q' (-> prompt) missing": 1}
    assert r["rejected"] == [{"index": 0, "field": "prompt", "problem": "mapped field 'q' (-> prompt) missing"}]
    with store.engine.connect() as c:
        assert c.execute(text("SELECT event_id, prompt, rating FROM feedback")).all() == [("m2", "mapped prompt", None)]
