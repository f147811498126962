"""Where feedback events came from, for `driftloop lineage`: each event's ingestion source.

>>> event_sources(store, ["e1", "e2"])
{'e1': 'feedback/2026-12-01.jsonl', 'e2': 'api'}
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import select

from driftloop.store.models import Feedback

if TYPE_CHECKING:
    from driftloop.store.repo import Store

_CHUNK = 500  # ids per IN (...) query: well under SQLite's bound-parameter limit


def event_sources(store: Store, event_ids: Iterable[str]) -> dict[str, str]:
    """event_id -> the source it was ingested from, for those of `event_ids` the store holds."""
    ids = sorted(set(event_ids))
    f = Feedback.__table__.c
    out: dict[str, str] = {}
    with store.engine.connect() as conn:
        for i in range(0, len(ids), _CHUNK):
            rows = conn.execute(select(f.event_id, f.source).where(f.event_id.in_(ids[i : i + _CHUNK])))
            out.update({str(e): s or "" for e, s in rows})
    return out
