"""The join of ratings to traced events: span links, ratings waiting for their span, and their expiry.

A traced LLM call (an OTLP span, an MLflow trace) is stored as an event like
any other; `link_spans` records which event each span became. A rating that
names a trace (`ingest.ratings.TraceRating`) may arrive before or after that
span: `add_ratings` stores it as waiting, and whichever of the two arrives
second applies the rating to the event (rating, rating_raw, thumbs_up,
correction; a field the rating leaves out keeps the event's value) and
deletes the waiting row, in the same transaction. A rating with a span id
joins that span; one with a trace id alone joins the trace's span that ended
last (the final answer). `expire_ratings` moves the ratings that waited
longer than the join window into the quarantine, with the reason.

    >>> link_spans(store, [SpanLink("4bf9...", "00f0...", "otel:4bf9...:00f0...", ended)], "http:/v1/traces")
    0
    >>> add_ratings(store, [TraceRating("4bf9...", "", 1.0, "1", True, None)], "http:/v1/feedback")
    JoinResult(joined=1, waiting=0)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.engine import Connection

from driftloop.store.engine import WRITE, bulk_insert_ignore, driver_value, insert_ignore
from driftloop.store.models import Feedback, Quarantine, TraceLink, TraceRating, utcnow
from driftloop.store.quarantine import quarantine_rows as _quarantine_rows
from driftloop.store.repo import Store

_FEEDBACK: Table = Feedback.__table__  # type: ignore[assignment]
_QUARANTINE: Table = Quarantine.__table__  # type: ignore[assignment]
LINK: Table = TraceLink.__table__  # type: ignore[assignment]
WAITING: Table = TraceRating.__table__  # type: ignore[assignment]
_RATED = ("rating", "rating_raw", "thumbs_up", "correction")
MLFLOW_PREFIX = "tr-"  # MLflow trace ids; such an event's id is its trace id
MLFLOW_SOURCE = "mlflow_traces:"  # source (and checkpoint key) prefix of the mlflow_traces source
_CHUNK = 500  # trace ids per IN (...) list
_LINK_COLUMNS = ("trace_id", "span_id", "event_id", "source", "ended_at")


@dataclass(frozen=True)
class SpanLink:
    """Span `span_id` of trace `trace_id` became event `event_id` (span '' : an MLflow trace as a whole)."""

    trace_id: str
    span_id: str
    event_id: str
    ended: datetime | None


class JoinResult(NamedTuple):
    """Ratings applied to their event now, and ratings left waiting for their span."""

    joined: int
    waiting: int


def link_spans(store: Store, links: Sequence[SpanLink], source: str) -> int:
    """Record which event each span became and apply the ratings waiting for them; returns how many joined.

    `source` is the events' source (their `source` column). A link stored
    already is kept as it is (a span sent twice).
    """
    if not links:
        return 0
    with store.engine.execution_options(**WRITE).begin() as conn:
        return link_spans_in(conn, links, source)


def link_spans_in(conn: Connection, links: Sequence[SpanLink], source: str) -> int:
    """`link_spans` inside the caller's write transaction."""
    if not links:
        return 0
    dialect = conn.dialect.name
    rows = [(lk.trace_id, lk.span_id, lk.event_id, source, driver_value(dialect, lk.ended)) for lk in links]
    bulk_insert_ignore(conn, LINK, list(_LINK_COLUMNS), rows, "trace_id, span_id")
    if conn.exec_driver_sql("SELECT 1 FROM trace_rating LIMIT 1").first() is None:
        return 0  # no rating waits for any span (the common case): nothing to join
    return len(_resolve(conn, {lk.trace_id for lk in links}))


def add_ratings(
    store: Store, ratings: Sequence[Any], source: str, now: datetime | None = None, wait: bool = True
) -> JoinResult:
    """Store ratings (`TraceRating`s) and apply each whose span is stored; the others wait for it.

    With `wait=False` a rating whose span is not stored is dropped instead (a
    source that re-reads feedback of events it stored itself).
    """
    if not ratings:
        return JoinResult(0, 0)
    with store.engine.execution_options(**WRITE).begin() as conn:
        return add_ratings_in(conn, ratings, source, now, wait)


def add_ratings_in(
    conn: Connection, ratings: Sequence[Any], source: str, now: datetime | None = None, wait: bool = True
) -> JoinResult:
    """`add_ratings` inside the caller's write transaction."""
    if not ratings:
        return JoinResult(0, 0)
    now = now or utcnow()
    rows = [{**{k: getattr(r, k) for k in ("trace_id", "span_id", *_RATED)}, "source": source} for r in ratings]
    ids = [
        conn.execute(WAITING.insert().values(**row, received_at=now).returning(WAITING.c.id)).scalar_one()
        for row in rows
    ]
    joined = _resolve(conn, {r.trace_id for r in ratings}) & set(ids)
    if not wait and len(joined) < len(ids):
        conn.execute(delete(WAITING).where(WAITING.c.id.in_(sorted(set(ids) - joined))))
    return JoinResult(len(joined), len(ratings) - len(joined) if wait else 0)


def expire_ratings(store: Store, window_s: float, now: datetime | None = None) -> int:
    """Quarantine the ratings that waited longer than `window_s` seconds for their span; returns how many."""
    with store.engine.execution_options(**WRITE).begin() as conn:
        return expire_ratings_in(conn, window_s, now)


def expire_ratings_in(conn: Connection, window_s: float, now: datetime | None = None) -> int:
    """`expire_ratings` inside the caller's write transaction."""
    cutoff = (now or utcnow()) - timedelta(seconds=window_s)
    old = conn.execute(select(WAITING).where(WAITING.c.received_at < cutoff).order_by(WAITING.c.id)).mappings().all()
    if not old:
        return 0
    quarantine = [
        {
            "source": r["source"],
            "raw": json.dumps(
                {k: r[k] for k in ("trace_id", "span_id", *_RATED) if r[k] not in (None, "")}, ensure_ascii=False
            ),
            "field": "trace_id",
            "reason": f"no span within the join window ({window_s:g} s)",
        }
        for r in old
    ]
    insert_ignore(conn, _QUARANTINE, _quarantine_rows(quarantine), ["content_id"])  # type: ignore[arg-type]
    conn.execute(delete(WAITING).where(WAITING.c.id.in_([r["id"] for r in old])))
    return len(old)


def waiting_ratings(store: Store) -> int:
    """How many ratings wait for their span."""
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(WAITING)).scalar_one())


def _resolve(conn: Connection, trace_ids: Iterable[str]) -> set[int]:
    """Apply the waiting ratings of `trace_ids` whose span is linked; returns their (deleted) ids.

    An MLflow trace id (`tr-...`) needs no link: the mlflow_traces source stores the trace as the event
    of that id.
    """
    done: set[int] = set()
    ids = sorted(set(trace_ids))
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        waiting = conn.execute(select(WAITING).where(WAITING.c.trace_id.in_(chunk)).order_by(WAITING.c.id)).mappings()
        waiting = list(waiting)
        if not waiting:
            continue
        links = [dict(lk) for lk in conn.execute(select(LINK).where(LINK.c.trace_id.in_(chunk))).mappings()]
        # An MLflow trace is one event whose id is the trace id: its own link.
        mlflow_ids = [t for t in chunk if t.startswith(MLFLOW_PREFIX)]
        if mlflow_ids:
            found = conn.execute(
                select(_FEEDBACK.c.event_id, _FEEDBACK.c.source).where(
                    _FEEDBACK.c.event_id.in_(mlflow_ids), _FEEDBACK.c.source.like(f"{MLFLOW_SOURCE}%")
                )
            )
            links += [
                {"trace_id": e, "span_id": "", "event_id": e, "source": src, "ended_at": None} for e, src in found
            ]
        by_span = {(lk["trace_id"], lk["span_id"]): lk for lk in links}
        last: dict[str, Any] = {}
        for lk in links:  # the span that ended last answers for its trace
            cur = last.get(lk["trace_id"])
            if cur is None or _end_key(lk) > _end_key(cur):
                last[lk["trace_id"]] = lk
        for r in waiting:
            lk = by_span.get((r["trace_id"], r["span_id"])) if r["span_id"] else last.get(r["trace_id"])
            if lk is None:
                continue
            values = {k: r[k] for k in _RATED if r[k] is not None}
            if "rating" in values:
                values["rating_raw"] = r["rating_raw"]
            conn.execute(
                update(_FEEDBACK)
                .where(_FEEDBACK.c.event_id == lk["event_id"], _FEEDBACK.c.source == lk["source"])
                .values(**values)
            )
            done.add(r["id"])
        if done:
            conn.execute(delete(WAITING).where(WAITING.c.id.in_(sorted(done))))
    return done


def _end_key(lk: Any) -> tuple[str, str]:
    ended = lk["ended_at"]
    return (ended.isoformat() if ended else "", lk["span_id"])
