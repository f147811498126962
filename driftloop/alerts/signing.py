"""HMAC-SHA256 signatures of alert deliveries, and their verification (pure).

The signature covers the timestamp and the exact body bytes, so neither can be
changed in transit, and an old delivery replayed later falls outside the window:

    signed = f"{timestamp}.".encode() + body
    X-Driftloop-Signature: v1=<hex HMAC-SHA256(secret, signed)>

    >>> headers = sign_headers("s3cret", body, timestamp=1764129600, event_type="retrain.started", delivery="d1")
    >>> verify("s3cret", headers, body, now=1764129700)
    True
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

TIMESTAMP = "X-Driftloop-Timestamp"  # Unix time of the attempt, whole seconds
SIGNATURE = "X-Driftloop-Signature"  # "v1=" + hex digest
EVENT = "X-Driftloop-Event"  # the event type
DELIVERY = "X-Driftloop-Delivery"  # stable across retries of one event to one webhook: dedupe on it
SCHEME = "v1"
WINDOW_S = 300  # replay window: a signature older (or newer) than this many seconds is refused


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """`v1=<hex>`: HMAC-SHA256 with `secret` over `f"{timestamp}."` followed by the body bytes."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def sign_headers(secret: str, body: bytes, timestamp: int, event_type: str, delivery: str) -> dict[str, str]:
    """The headers of one signed attempt (plus the JSON content type)."""
    return {
        "Content-Type": "application/json; charset=utf-8",
        TIMESTAMP: str(int(timestamp)),
        SIGNATURE: signature(secret, int(timestamp), body),
        EVENT: event_type,
        DELIVERY: delivery,
        "User-Agent": "driftloop-alerts/1",
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float, window_s: float = WINDOW_S) -> bool:
    """True when the headers carry a valid `v1` signature of `body` whose timestamp lies within
    `window_s` seconds of `now` (Unix seconds); header names are matched case-insensitively."""
    lower = {k.lower(): v for k, v in headers.items()}
    ts, sig = lower.get(TIMESTAMP.lower(), ""), lower.get(SIGNATURE.lower(), "")
    if not ts.isdigit() or abs(now - int(ts)) > window_s:
        return False
    return hmac.compare_digest(sig.encode(), signature(secret, ts, body).encode())
