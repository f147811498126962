"""The one module that makes HTTP requests for alerts: signed POSTs with retries and backoff.

Connect errors, timeouts, 5xx and 429 are retried with exponential backoff
(`backoff_seconds` doubling each time, at most 60 s, randomised down to half
when `jitter` is on; a 429's Retry-After is honoured up to the same cap);
any other 4xx is final at once, since sending the same body again cannot
succeed. Each attempt is signed afresh, so a retry is never outside the
receiver's replay window. Redirects are not followed (an allow-list of hosts
would otherwise be bypassed). The host is resolved once and every address checked
(`driftloop.alerts.resolve`); the request goes to a checked address, with the
host's name in the Host header and TLS's SNI and certificate check, so a second,
different answer from DNS is never used.

    >>> res = post("https://hooks.example.com/x", body, secret, "retrain.started", "evt_1:ops",
    ...            retries=3, backoff_seconds=1.0, timeout_seconds=5.0)
    >>> res.ok, res.attempts, res.status
    (True, 1, 200)
"""

from __future__ import annotations

import contextvars
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from driftloop.alerts.resolve import ForbiddenHost, checked_addresses
from driftloop.alerts.signing import sign_headers

MAX_BACKOFF_S = 60.0
# httpx logs every request's full URL at INFO; chat webhook URLs carry tokens, so while an alert is
# being sent its request lines are dropped (other httpx users, e.g. Prefect's client, keep theirs).
_SENDING: contextvars.ContextVar[bool] = contextvars.ContextVar("driftloop_alert_sending", default=False)


class _HideAlertUrls(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _SENDING.get()


logging.getLogger("httpx").addFilter(_HideAlertUrls())


@dataclass
class Result:
    """How one delivery ended: `ok`, the attempts made, the last HTTP status and the last error."""

    ok: bool
    attempts: int
    status: int | None = None
    error: str = ""


def backoff(attempt: int, base: float, jitter: bool, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): base * 2**(attempt-1), capped
    at 60 s, and with jitter a uniform draw from [half, all] of it."""
    wait = min(base * 2 ** (attempt - 1), MAX_BACKOFF_S)
    return wait * (0.5 + 0.5 * rng()) if jitter else wait


def post(
    url: str,
    body: bytes,
    secret: str,
    event_type: str,
    delivery: str,
    *,
    retries: int,
    backoff_seconds: float,
    timeout_seconds: float,
    jitter: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    allow_link_local: bool = False,
) -> Result:
    """POST `body` to `url`, signed with `secret`, retrying as described above; never raises for
    network or HTTP failures (they are in the result). Error texts never contain the secret or the URL.
    A host that resolves to a forbidden address (`resolve.checked_addresses`) is final at once."""
    token = _SENDING.set(True)
    try:
        return _post(
            url,
            body,
            secret,
            event_type,
            delivery,
            retries,
            backoff_seconds,
            timeout_seconds,
            jitter,
            sleep,
            clock,
            allow_link_local,
        )
    finally:
        _SENDING.reset(token)


def _post(
    url: str,
    body: bytes,
    secret: str,
    event_type: str,
    delivery: str,
    retries: int,
    backoff_seconds: float,
    timeout_seconds: float,
    jitter: bool,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    allow_link_local: bool,
) -> Result:
    res = Result(ok=False, attempts=0)
    target = httpx.URL(url)
    pinned: tuple[list[httpx.URL], dict[str, str], dict[str, str]] | None = None
    with httpx.Client(timeout=httpx.Timeout(timeout_seconds), follow_redirects=False, trust_env=False) as client:
        for attempt in range(1, retries + 2):
            res.attempts = attempt
            headers = sign_headers(secret, body, int(clock()), event_type, delivery)
            retry_after = 0.0
            try:
                if pinned is None:
                    pinned = _pin(target, allow_link_local)
                urls, host, sni = pinned
                r = _post_first(client, urls, body, {**headers, **host}, sni)
            except ForbiddenHost as e:
                res.status, res.error = None, str(e)
                return res  # no retry can make the address allowed
            except OSError as e:  # the name did not resolve (socket.gaierror): like a connect error
                res.status, res.error = None, f"{type(e).__name__}: name resolution failed"
            except httpx.HTTPError as e:
                res.status, res.error = None, _describe(e)
            else:
                res.status = r.status_code
                if 200 <= r.status_code < 300:
                    res.ok, res.error = True, ""
                    return res
                res.error = f"HTTP {r.status_code}"
                if r.status_code < 500 and r.status_code != 429:
                    return res  # 3xx and other 4xx: the same request cannot succeed later
                retry_after = _retry_after(r.headers.get("Retry-After"))
            if attempt <= retries:
                sleep(min(max(backoff(attempt, backoff_seconds, jitter), retry_after), MAX_BACKOFF_S))
    return res


def _pin(url: httpx.URL, allow_link_local: bool) -> tuple[list[httpx.URL], dict[str, str], dict[str, str]]:
    """(the URL with its host replaced by each checked address, the Host header, TLS's server name)."""
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = checked_addresses(url.host, port, allow_link_local)
    name = f"[{url.host}]" if ":" in url.host else url.host
    host = name if url.port is None else f"{name}:{url.port}"
    sni = {"sni_hostname": url.host} if url.scheme == "https" else {}
    return [url.copy_with(host=a) for a in addresses], {"Host": host}, sni


def _post_first(
    client: httpx.Client, urls: list[httpx.URL], body: bytes, headers: dict[str, str], sni: dict[str, str]
) -> httpx.Response:
    """POST to the first of `urls` (one per checked address) that accepts a connection."""
    for i, to in enumerate(urls):
        try:
            return client.post(to, content=body, headers=headers, extensions=sni)
        except httpx.ConnectError:
            if i == len(urls) - 1:
                raise
    raise httpx.ConnectError("no address")


def _describe(e: httpx.HTTPError) -> str:
    # The exception's class says what failed; its text may embed the URL (chat URLs carry tokens).
    kind = type(e).__name__
    text = str(e)
    return kind if (not text or "://" in text) else f"{kind}: {text[:200]}"


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0  # an HTTP date: fall back to the exponential backoff
