"""Defences of the HTTP API against abusive clients, as one ASGI wrapper (`api.limits`).

- **Lockout after failed authentication.** A client address that earns `auth_failures` 401s
  (missing or wrong bearer token, bad webhook signature) within `auth_window_s` gets 429 with
  `Retry-After` on every request for `auth_lockout_s`, a valid token included. Other addresses are
  unaffected. Counted in this process: several replicas each count their own.
- **Body timeout.** A request whose body has not arrived `body_timeout_s` after its head gets 408
  and its connection closed (a slowloris that sends a head, then trickles or stalls).

The head timeout and the connection bounds are uvicorn's (`uvicorn_options`, `HeadTimeoutH11`).

    >>> app.add_middleware(ClientLimits, limits=cfg.api.limits)  # the app factory does this
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from driftloop.core.config_limits import ApiLimits

Scope = dict[str, Any]
Message = dict[str, Any]


class AuthLockout:
    """Failed-authentication counts per client address, and the addresses locked out (thread-safe).

    `clock` is seconds on a monotonic clock (injectable for tests).
    """

    def __init__(self, limits: ApiLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._locked: dict[str, float] = {}  # address -> monotonic time the lockout ends
        self._lock = threading.Lock()

    def retry_after(self, addr: str) -> float:
        """Seconds `addr` stays locked out; 0 when it is not."""
        now = self.clock()
        with self._lock:
            until = self._locked.get(addr)
            if until is None:
                return 0.0
            if until <= now:
                del self._locked[addr]
                return 0.0
            return until - now

    def failed(self, addr: str) -> None:
        """Count one failed authentication from `addr`; lock it out at `auth_failures` in the window."""
        now = self.clock()
        with self._lock:
            window = self._failures.setdefault(addr, deque())
            window.append(now)
            while window and window[0] <= now - self.limits.auth_window_s:
                window.popleft()
            if len(window) >= self.limits.auth_failures:
                self._locked[addr] = now + self.limits.auth_lockout_s
                del self._failures[addr]
            self._prune(now)

    def _prune(self, now: float) -> None:
        # Bounded memory under a spray of addresses: forget windows and lockouts that have lapsed.
        if len(self._failures) + len(self._locked) < 10_000:
            return
        for a in [a for a, w in self._failures.items() if not w or w[-1] <= now - self.limits.auth_window_s]:
            del self._failures[a]
        for a in [a for a, until in self._locked.items() if until <= now]:
            del self._locked[a]


def client_address(scope: Scope) -> str:
    """The request's client address (after uvicorn's proxy-header handling); `unknown` without one."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _respond(send: Callable, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ClientLimits:
    """ASGI middleware: the auth lockout and the body timeout of `limits` (see the module docstring)."""

    def __init__(self, app: Any, limits: ApiLimits, lockout: AuthLockout | None = None) -> None:
        self.app = app
        self.limits = limits
        self.lockout = lockout or AuthLockout(limits)

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        addr = client_address(scope)
        wait = self.lockout.retry_after(addr)
        if wait > 0:
            body = b'{"detail":"too many failed authentications from this address; retry later"}'
            await _respond(send, 429, body, [(b"retry-after", str(math.ceil(wait)).encode())])
            return
        deadline = time.monotonic() + self.limits.body_timeout_s
        state = {"status": 0, "timed_out": False, "body_done": False}

        async def timed_receive() -> Message:
            if state["timed_out"]:
                return {"type": "http.disconnect"}
            if state["body_done"]:
                return await receive()  # the body is in: what follows is only a disconnect
            try:
                msg = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                state["timed_out"] = True
                if not state["status"]:
                    state["status"] = 408
                    body = b'{"detail":"request body not received in time (api.limits.body_timeout_s)"}'
                    await _respond(send, 408, body, [(b"connection", b"close")])
                return {"type": "http.disconnect"}
            if msg["type"] == "http.request" and not msg.get("more_body", False):
                state["body_done"] = True
            return msg

        async def watched_send(msg: Message) -> None:
            if state["timed_out"]:
                return  # the 408 is sent; the app's late answer goes nowhere
            if msg["type"] == "http.response.start":
                state["status"] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, timed_receive, watched_send)
        except Exception:
            if not state["timed_out"]:
                raise  # after a 408 the app's complaint about the lost body is expected
        if state["status"] == 401:
            self.lockout.failed(addr)


def uvicorn_options(limits: ApiLimits) -> dict[str, Any]:
    """uvicorn.run/uvicorn.Config options of `limits`: keep-alive, head size, concurrency, proxies."""
    return {
        "timeout_keep_alive": limits.keep_alive_s,
        "h11_max_incomplete_event_size": limits.max_header_bytes,
        "limit_concurrency": limits.max_connections,
        "proxy_headers": True,
        "forwarded_allow_ips": ",".join(limits.trusted_proxies) or "",
        "http": head_timeout_protocol(limits.header_timeout_s),
    }


def head_timeout_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose request head is not complete within `seconds`
    of the connection's start or of the head's first byte (uvicorn itself times only idle connections)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadTimeoutH11(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(seconds, self._head_expired)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_expired(self) -> None:
            self._head_timer = None
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()  # no request in progress: the head never completed

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not None and self.cycle is not before:
                self._disarm()  # a new request's head is complete

        def data_received(self, data: bytes) -> None:
            # The first bytes of a kept-alive connection's next request start its head's clock
            # (until then the connection is idle, and the keep-alive timeout applies).
            if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()
            super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeadTimeoutH11
