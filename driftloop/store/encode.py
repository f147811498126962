"""A batch's events in the driver's form: row tuples (SQLite, small PostgreSQL batches) or COPY text.

Every conversion reads the column list and each column's kind from the
`FeedbackEvent` schema (`batch.EVENT_FIELDS`, `batch.field_kind`), so a new
optional field is stored without a change here. `encode` is pure (no
database), so the ingestion pipeline can call it through `Store.prepare` in
the thread that parsed a block, leaving the writer only the sending.

    >>> enc = encode(events, "sqlite", "feedback.jsonl", driver_value("sqlite", utcnow()), "files:feedback.jsonl")
    >>> enc.n_rows, enc.total
    (1200, 1203)
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Sequence
from datetime import UTC
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from driftloop.core.types import FeedbackEvent
from driftloop.store.batch import (
    EVENT_FIELDS,
    Encoded,
    EventColumns,
    EventTable,
    field_default,
    field_kind,
)
from driftloop.store.engine import driver_value

if TYPE_CHECKING:
    import pyarrow as pa

_VALUES = itemgetter(*EVENT_FIELDS)
_TIME_AT = tuple(i for i, f in enumerate(EVENT_FIELDS) if field_kind(f) == "time")
_JSON_AT = tuple(i for i, f in enumerate(EVENT_FIELDS) if field_kind(f) == "json")
_SEGMENT_AT = EVENT_FIELDS.index("segment")
_SEGMENT_JSON: dict[tuple, str] = {}


def _json(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False) if v else ("{}" if isinstance(v, dict) else "[]")


def _segment_json(seg: dict[str, str]) -> str:
    # Segments repeat (a few topics x locales): serialise each distinct one once.
    key = tuple(seg.items())
    text_ = _SEGMENT_JSON.get(key)
    if text_ is None:
        text_ = json.dumps(seg, ensure_ascii=False)
        if len(_SEGMENT_JSON) < 10_000:  # bounded: ids or free text as segments would not repeat
            _SEGMENT_JSON[key] = text_
    return text_


def event_row(e: FeedbackEvent, source: str, now: Any, dialect: str, namespace: str = "") -> tuple:
    """One event as a feedback row: EVENT_COLUMNS order, the driver's types (`now`: ingestion time, driver form;
    `namespace`: the source's id namespace)."""
    v = list(_VALUES(e.__dict__))
    for i in _TIME_AT:
        ts = v[i]
        if dialect == "sqlite" and ts is not None and ts.tzinfo is UTC:  # driver_value inlined
            v[i] = ts.replace(tzinfo=None).isoformat(" ", "microseconds")
        else:
            v[i] = driver_value(dialect, ts)
    for i in _JSON_AT:
        v[i] = (_segment_json(v[i]) if v[i] else "{}") if i == _SEGMENT_AT else _json(v[i])
    v += (source, now, namespace)
    return tuple(v)


def _defaults(dialect: str) -> dict[str, Any]:
    """Each optional field's default in the driver's form: the value of a column a block does not give."""
    out = {}
    for f in EVENT_FIELDS:
        if not FeedbackEvent.model_fields[f].is_required():
            d = field_default(f)
            out[f] = _json(d) if field_kind(f) == "json" else driver_value(dialect, d)
    return out


def ts_text(ts: pa.Array, dialect: str) -> pa.Array:
    """A UTC timestamp column as the text the driver takes: `YYYY-MM-DD HH:MM:SS.ffffff`, `+00:00` on PostgreSQL."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(ts.type):
        ts = pc.cast(pc.cast(ts, pa.timestamp("us")), pa.string())
    return ts if dialect == "sqlite" else pc.binary_join_element_wise(ts, "+00:00", "")


def table_columns(table: EventTable, dialect: str) -> list[Any]:
    """The table's columns in EVENT_FIELDS order: arrow arrays, or a field's default where it has no column."""
    defaults = _DEFAULTS[dialect]
    out: list[Any] = []
    for f in EVENT_FIELDS:
        c = table.columns.get(f)
        if c is None:
            if f not in defaults:
                raise ValueError(f"column block without a {f!r} column: the field is required")
            out.append(Constant(defaults[f]))
        elif field_kind(f) == "time":
            out.append(ts_text(c, dialect))
        else:
            out.append(c)
    return out


_DEFAULTS = {d: _defaults(d) for d in ("sqlite", "postgresql")}


class Constant:
    """A column every row of which holds one value (a field the block does not give)."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _table_rows(table: EventTable, source: str, now: Any, dialect: str, namespace: str) -> list[tuple]:
    n = len(table)
    cols = [repeat(c.value, n) if isinstance(c, Constant) else c.to_pylist() for c in table_columns(table, dialect)]
    rows = list(zip(*cols, repeat(source), repeat(now), repeat(namespace)))
    for j, e in table.events.items():
        rows[j] = event_row(e, source, now, dialect, namespace)
    return rows


def assemble(events: EventColumns, source: str, now: Any, dialect: str, namespace: str = "") -> list[tuple]:
    """The rows of column-form events, in position order (the first of two duplicates first)."""
    done_idx: list[int] = []  # positions of the rows so far, ascending
    rows: list[tuple] = []
    for idx, table in events.tables:
        done_idx.extend(idx)
        rows.extend(_table_rows(table, source, now, dialect, namespace))
    for i, e in events.events:  # few rows: each goes where its position is
        at = bisect_left(done_idx, i)
        done_idx.insert(at, i)
        rows.insert(at, event_row(e, source, now, dialect, namespace))
    return rows


def encode(
    events: Sequence[FeedbackEvent] | EventColumns, dialect: str, source: str, now: Any, namespace: str = ""
) -> Encoded:
    """The events as the store writes them on `dialect`; duplicates are kept for the write to count.

    Every row is stored with `source` and the source's id `namespace`.
    PostgreSQL gets COPY text for column-form events (built with arrow, in
    `copytext`) and row tuples for a list of events, both with in-batch
    duplicates dropped (the first wins) so that a COPY fails only on an id
    stored before. SQLite gets row tuples in order: `INSERT OR IGNORE`
    keeps the first of two.
    """
    if isinstance(events, EventColumns):
        if dialect == "postgresql":
            from driftloop.store.copytext import copy_block

            block = copy_block(events, source, now, namespace)
            return Encoded(block.payload, block.rows, block.total, dialect)
        rows = assemble(events, source, now, dialect, namespace)
        return Encoded(rows, len(rows), len(rows), dialect)
    rows = [event_row(e, source, now, dialect, namespace) for e in events]
    if dialect == "postgresql":
        seen: set[str] = set()
        firsts = []
        for r in rows:
            if r[0] not in seen:
                seen.add(r[0])
                firsts.append(r)
        rows = firsts
    return Encoded(rows, len(rows), len(events), dialect)
