"""Quarantine rows as stored: cleaned text and a content id, so a row quarantined twice
(a copy of a file, a client's retry, two concurrent ingests) is stored once.

    >>> rows = quarantine_rows([{"source": "files", "raw": "{bad", "field": "json", "reason": "malformed"}] * 2)
    >>> len(rows), rows[0]["content_id"] == quarantine_id("{bad", "json", "malformed", "files")
    (1, True)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from driftloop.store.batch import QuarantineRow
from driftloop.store.models import utcnow


def clean_text(value: Any) -> str:
    """`value` as text the store can hold."""
    # PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded.
    s = value if isinstance(value, str) else str(value)
    return s.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def quarantine_id(raw: str, field: str, reason: str, namespace: str) -> str:
    """32 hex characters of SHA-256 over a quarantined row and its source's id namespace.

    Like an event's content id (`ingest.rows.event_id_for`), the file path is
    not part of it: the same bad row in a copy of a file, or sent again by a
    client, is one quarantine row.
    """
    canon = json.dumps([namespace, raw, field, reason], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8", "replace")).hexdigest()[:32]


def quarantine_row(q: QuarantineRow) -> dict[str, Any]:
    row: dict[str, Any] = {
        "source": clean_text(q.get("source", "")),
        "raw": clean_text(q.get("raw", "")),
        "field": clean_text(q.get("field", ""))[:128],
        "reason": clean_text(q.get("reason", "")),
        "created_at": utcnow(),
    }
    row["content_id"] = q.get("content_id") or quarantine_id(row["raw"], row["field"], row["reason"], row["source"])
    row["line"] = q.get("line")
    key = q.get("row_key")
    row["row_key"] = None if key is None else clean_text(key)[:256]
    return row


def quarantine_rows(quarantine: Sequence[QuarantineRow]) -> list[dict[str, Any]]:
    """Store rows of a batch's quarantined rows, each content id once (the first wins)."""
    out, seen = [], set()
    for q in quarantine:
        row = quarantine_row(q)
        if row["content_id"] not in seen:
            seen.add(row["content_id"])
            out.append(row)
    return out
