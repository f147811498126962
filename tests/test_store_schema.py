"""The feedback table follows the `FeedbackEvent` schema: one column per field, written and read back whole.

A field added to the event but not to the store (or the reverse, or without
its migration) fails here, before any source loses it silently.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from sqlalchemy import inspect, select

from driftloop.core.types import FeedbackEvent
from driftloop.ingest.columnar import block_parts
from driftloop.ingest.lines import Block
from driftloop.ingest.pipeline import RowParser
from driftloop.store import Batch, Checkpoint, EventColumns, EventTable, Store
from driftloop.store.batch import EVENT_COLUMNS, EVENT_FIELDS, STORE_COLUMNS
from driftloop.store.models import Feedback

WHEN = datetime(2026, 11, 1, 10, 0, 0, 250000, tzinfo=UTC)


def full_event(event_id: str = "e1") -> FeedbackEvent:
    """An event with every field away from its default, so a field the store drops shows."""
    values = {
        "event_id": event_id,
        "ts": WHEN,
        "model_version": "7",
        "prompt": "where is my parcel",
        "response": "on its way",
        "rating": 0.75,
        "rating_raw": "4",
        "thumbs_up": False,
        "correction": "tomorrow",
        "segment": {"topic": "shipping", "tier": "gold"},
        "latency_ms": 148.5,
        "tokens_in": 12,
        "tokens_out": 30,
        "metadata": {"client": "web", "n": [1, 2]},
    }
    for name, info in FeedbackEvent.model_fields.items():  # a field added later: any value of its type
        if name not in values:
            values[name] = {str: "x", int: 1, float: 0.5, bool: True}.get(
                next((t for t in (str, int, float, bool) if t in getattr(info.annotation, "__args__", ())), str)
            )
    return FeedbackEvent(**values)


def stored(store: Store) -> list[dict]:
    table = Feedback.__table__
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).order_by(table.c.event_id)).mappings()]


def test_the_store_columns_are_the_event_fields_then_the_store_own():
    assert EVENT_FIELDS == tuple(FeedbackEvent.model_fields)
    assert EVENT_COLUMNS == EVENT_FIELDS + STORE_COLUMNS
    columns = [c.name for c in Feedback.__table__.c]
    assert sorted(columns) == sorted(EVENT_COLUMNS)  # the order: declared columns first, then derived ones


def test_the_migrations_make_exactly_the_model_columns(sqlite_store):
    columns = {c["name"] for c in inspect(sqlite_store.engine).get_columns("feedback")}
    assert columns == set(EVENT_COLUMNS), "a FeedbackEvent field without its migration (or a column without a field)"


def test_every_field_is_written_and_read_back(store):
    e = full_event()
    assert store.write_batch(Batch("src", [e], (), Checkpoint("k", "1"))) == (1, 0)
    (row,) = stored(store)
    assert {f: row[f] for f in EVENT_FIELDS} == e.model_dump()
    assert row["source"] == "src" and row["ingested_at"].tzinfo is not None
    assert store.get_checkpoint("k") == "1"


def test_column_form_events_take_each_missing_field_default(store):
    # Only the required fields as columns: every other field takes its default.
    table = EventTable(
        {"event_id": pa.array(["c1"]), "ts": pa.array([WHEN], pa.timestamp("us", tz="UTC")), "prompt": pa.array(["p"])}
    )
    assert store.write_batch(Batch("src", EventColumns([([0], table)]))) == (1, 0)
    (row,) = stored(store)
    defaults = FeedbackEvent(event_id="c1", ts=WHEN, prompt="p").model_dump()
    assert {f: row[f] for f in EVENT_FIELDS} == defaults


def test_the_fast_path_and_the_row_path_store_the_same_row(store):
    line = (
        b'{"event_id": "f1", "ts": "2026-11-01T10:00:00.25+00:00", "model_version": "7", "prompt": "hi", '
        b'"response": "hello", "rating": 4, "thumbs_up": true, "segment": {"topic": "billing"}, '
        b'"latency_ms": 148.5, "tokens_in": 12, "tokens_out": 30}'
    )
    parser = RowParser()
    events, quarantine = block_parts(Block([line], {}, 0), parser, "src", Counter())
    assert events.tables and not events.events and not quarantine  # the arrow path took it
    store.write_batch(Batch("src", events))
    from driftloop.ingest.files import json_object

    expected = parser.event(json_object(line), "src").model_dump()
    (row,) = stored(store)
    assert {f: row[f] for f in EVENT_FIELDS} == expected


def test_a_required_field_missing_from_column_form_is_refused(sqlite_store):
    table = EventTable({"event_id": pa.array(["c1"]), "prompt": pa.array(["p"])})
    with pytest.raises(ValueError, match="'ts'"):
        sqlite_store.write_batch(Batch("src", EventColumns([([0], table)])))
    assert sqlite_store.count_events() == 0
