"""The API against abusive clients (api.limits): a lockout with 429 and Retry-After after repeated
bearer-token failures from one address, leaving other addresses alone; a 408 for a body that
stalls after its head; a closed connection for a head that never completes.

The server is a real uvicorn on loopback with `uvicorn_options`, as `driftloop serve` runs it.
Client addresses are told apart by X-Forwarded-For, which uvicorn honours from loopback (the
default `api.limits.trusted_proxies`), as behind a reverse proxy on the same host.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn
from test_api_feedback import free_port

from driftloop.app.api import create_app
from driftloop.app.api.limits import AuthLockout, uvicorn_options
from driftloop.core.config import load_config
from driftloop.core.config_limits import ApiLimits

TOKEN = "limits-t0ken-all-scopes-x"
EVENT = {"ts": "2026-11-01T10:00:00+00:00", "prompt": "q", "response": "a", "model_version": "1"}


@pytest.fixture
def server(sqlite_store):
    """Base URL of a server that locks an address out after 3 failures for 30 s, with 1 s body and head timeouts."""
    limits = {"auth_failures": 3, "auth_window_s": 30, "auth_lockout_s": 30, "body_timeout_s": 1, "header_timeout_s": 1}
    cfg = load_config(None, env={}, check_files=False, overrides={"api": {"token": TOKEN, "limits": limits}})
    app = create_app(cfg, store=sqlite_store)
    port = free_port()
    opts = uvicorn_options(cfg.api.limits)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **opts))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield port
    srv.should_exit = True
    t.join(10)


def post(port: int, token: str, addr: str) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/v1/feedback",
        json=EVENT,
        headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": addr},
        timeout=10,
    )


def test_failed_tokens_lock_out_the_address_and_only_it(server):
    port = server
    assert post(port, TOKEN, "203.0.113.7").status_code == 200
    for _ in range(3):
        assert post(port, "wrong-token-wrong-token", "203.0.113.7").status_code == 401
    locked = post(port, TOKEN, "203.0.113.7")  # the right token, from the locked-out address
    assert locked.status_code == 429
    assert 25 <= int(locked.headers["retry-after"]) <= 30
    # Another address with the right token, and one with two failures of its own, are unaffected.
    assert post(port, TOKEN, "198.51.100.9").status_code == 200
    for _ in range(2):
        assert post(port, "wrong-token-wrong-token", "198.51.100.10").status_code == 401
    assert post(port, TOKEN, "198.51.100.10").status_code == 200


def test_lockout_counts_within_the_window_and_ends():
    now = [1000.0]
    lock = AuthLockout(ApiLimits(auth_failures=3, auth_window_s=10, auth_lockout_s=60), clock=lambda: now[0])
    lock.failed("a")
    lock.failed("a")
    now[0] += 11  # the first two have left the window
    lock.failed("a")
    assert lock.retry_after("a") == 0
    lock.failed("a")
    lock.failed("a")
    assert lock.retry_after("a") == 60
    now[0] += 59.5
    assert lock.retry_after("a") == pytest.approx(0.5)
    now[0] += 1
    assert lock.retry_after("a") == 0


def raw(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.settimeout(10)
    return s


def read_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(4096):
        out += chunk
    return out


def test_a_stalled_body_gets_408_and_a_closed_connection(server):
    s = raw(server)
    head = (
        f"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    t0 = time.monotonic()
    s.sendall(head.encode() + b'{"ts": "2026')  # a head, a little of the body, then nothing
    answer = read_all(s)  # returns once the server closes the connection
    took = time.monotonic() - t0
    s.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 0.8 <= took < 5, took


def test_a_stalled_head_is_closed(server):
    s = raw(server)
    t0 = time.monotonic()
    s.sendall(b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\n")  # the head never ends
    answer = read_all(s)
    took = time.monotonic() - t0
    s.close()
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    assert 0.8 <= took < 5, took


def test_an_idle_kept_alive_connection_outlives_the_head_timeout(server):
    with httpx.Client(base_url=f"http://127.0.0.1:{server}", timeout=10) as c:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert c.post("/v1/feedback", json=EVENT, headers=headers).status_code == 200
        time.sleep(1.5)  # idle longer than header_timeout_s, within keep_alive_s
        assert c.post("/v1/feedback", json=EVENT, headers=headers).status_code == 200
