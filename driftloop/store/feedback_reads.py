"""Reads of stored feedback that curation needs beyond windows: rated events with their texts.

>>> rated_events(store)[0]
{'event_id': 'e1', 'ts': ..., 'prompt': 'where is my order', 'response': 'track it.', 'thumbs_up': True, 'rating': None}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select

from driftloop.store.models import Feedback

if TYPE_CHECKING:
    from driftloop.store.repo import Store


def rated_events(store: Store, limit: int = 200_000) -> list[dict[str, Any]]:
    """Events with a thumb or a rating and no correction (corrections go through the golden split),
    newest first up to `limit`, then ordered by event_id: event_id, ts, prompt, response,
    thumbs_up, rating."""
    f = Feedback.__table__.c
    stmt = (
        select(f.event_id, f.ts, f.prompt, f.response, f.thumbs_up, f.rating)
        .where(f.correction.is_(None), or_(f.thumbs_up.is_not(None), f.rating.is_not(None)))
        .order_by(f.ts.desc())
        .limit(limit)
    )
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    return sorted(rows, key=lambda r: str(r["event_id"]))
