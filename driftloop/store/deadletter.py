"""Dead-letter rows of alert deliveries: written when every retry failed, re-sent by `driftloop alerts retry`.

Functions over a `Store` (its engine and write transactions), so the
repository class stays about feedback; each call is one transaction. A row
keeps the webhook's name and its URL redacted (`redact_url`), never the
credentials a URL may carry: `driftloop alerts retry` re-sends to the URL the
config has under that name.

    >>> row_id = add(store, webhook="ops", url=url, event_type="retrain.failed", event_id=ev.id,
    ...              body=body, error="ConnectError", attempts=4)
    >>> [r["id"] for r in pending(store)]
    [1]
    >>> mark_delivered(store, row_id, attempts=1)
    >>> discard(store, webhook="old-hook")   # rows of a removed webhook: kept, never re-sent
    2
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Table, select, update

from driftloop.store.engine import WRITE
from driftloop.store.models import AlertDeadLetter, utcnow

if TYPE_CHECKING:
    from driftloop.store import Store

_DL: Table = AlertDeadLetter.__table__  # type: ignore[assignment]
ERROR_MAX = 2000  # characters of the last error kept


MASK = "***"


def redact_url(url: str) -> str:
    """`url` without what may be a credential: no user or password, no query or fragment, and each path
    segment that looks like a token (16+ characters, or 8+ with a digit) masked.

    Chat webhook URLs carry their token in the path (Slack's
    /services/T.../B.../<token>) or the query; the dead-letter table keeps
    this form only, for people to tell webhooks apart. A re-send takes the
    URL from the config by the webhook's name.

        >>> redact_url("https://u:pw@hooks.example.com/services/T0123ABCD/XyZ0123456789abcdef?token=s")
        'https://hooks.example.com/services/***/***'
    """
    u = urlsplit(url)
    netloc = u.netloc.rpartition("@")[2]
    segments = [
        MASK if len(seg) >= 16 or (len(seg) >= 8 and any(c.isdigit() for c in seg)) else seg
        for seg in u.path.split("/")
    ]
    return urlunsplit((u.scheme, netloc, "/".join(segments), "", ""))


def scrub(text: str, url: str) -> str:
    """`text` (an error message) with `url`, and each credential part of it, replaced by the redacted URL or MASK."""
    if not url:
        return text
    text = text.replace(url, redact_url(url))
    u = urlsplit(url)
    secrets = [u.password or "", u.query, u.fragment]
    secrets += [seg for seg in u.path.split("/") if seg and redact_url(f"http://h/{seg}") != f"http://h/{seg}"]
    for s in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):  # shorter: a word, not a secret
        text = text.replace(s, MASK)
    return text


def add(
    store: Store,
    *,
    webhook: str,
    url: str,
    event_type: str,
    event_id: str,
    body: bytes | str,
    error: str,
    attempts: int,
) -> int:
    """Record a failed delivery with its exact body; return the row id.

    The URL is stored redacted (`redact_url`) and the error scrubbed of it:
    the table never holds a webhook's credentials.
    """
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    with store.engine.execution_options(**WRITE).begin() as conn:
        row = conn.execute(
            _DL.insert()
            .values(
                created_at=utcnow(),
                webhook=webhook,
                url=redact_url(url),
                event_type=event_type,
                event_id=event_id,
                body=text,
                last_error=scrub(error, url)[:ERROR_MAX],
                attempts=attempts,
                delivered_at=None,
            )
            .returning(_DL.c.id)
        ).scalar_one()
    return int(row)


def rows(
    store: Store, webhook: str | None = None, include_delivered: bool = False, limit: int | None = None
) -> list[dict[str, Any]]:
    """Dead-letter rows, oldest first, as dicts of the table's columns; only pending ones (neither
    delivered nor discarded) unless `include_delivered`, only one webhook's when `webhook` is given."""
    stmt = select(_DL).order_by(_DL.c.id)
    if not include_delivered:
        stmt = stmt.where(_DL.c.delivered_at.is_(None), _DL.c.discarded_at.is_(None))
    if webhook is not None:
        stmt = stmt.where(_DL.c.webhook == webhook)
    if limit is not None:
        stmt = stmt.limit(limit)
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def pending(store: Store, webhook: str | None = None) -> list[dict[str, Any]]:
    """Rows still to re-send (neither delivered nor discarded), oldest first (see `rows`)."""
    return rows(store, webhook)


def discard(store: Store, ids: list[int] | None = None, webhook: str | None = None) -> list[int]:
    """Mark pending rows as discarded (kept, never re-sent): those in `ids`, or else all of `webhook`'s.

    Returns the ids discarded, in one transaction; rows already delivered or
    discarded are left as they are. Give `ids` or `webhook` (or both: the
    rows must match both).
    """
    if ids is None and webhook is None:
        raise ValueError("discard: give ids or a webhook")
    cond = [_DL.c.delivered_at.is_(None), _DL.c.discarded_at.is_(None)]
    if ids is not None:
        cond.append(_DL.c.id.in_(ids))
    if webhook is not None:
        cond.append(_DL.c.webhook == webhook)
    with store.engine.execution_options(**WRITE).begin() as conn:
        return sorted(
            int(i)
            for i in conn.execute(update(_DL).where(*cond).values(discarded_at=utcnow()).returning(_DL.c.id)).scalars()
        )


def mark_delivered(store: Store, row_id: int, attempts: int) -> None:
    """A re-send succeeded: set `delivered_at` and add its `attempts` to the row's count."""
    with store.engine.execution_options(**WRITE).begin() as conn:
        conn.execute(
            update(_DL).where(_DL.c.id == row_id).values(delivered_at=utcnow(), attempts=_DL.c.attempts + attempts)
        )


def record_failure(store: Store, row_id: int, error: str, attempts: int, url: str = "") -> None:
    """A re-send failed again: keep its error (scrubbed of `url`, the webhook's) and add its `attempts`."""
    with store.engine.execution_options(**WRITE).begin() as conn:
        conn.execute(
            update(_DL)
            .where(_DL.c.id == row_id)
            .values(last_error=scrub(error, url)[:ERROR_MAX], attempts=_DL.c.attempts + attempts)
        )
