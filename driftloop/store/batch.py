"""What `Store.write_batch` takes: a batch of events, its quarantined rows and the source's checkpoint.

The store owns this format, so a source only has to produce it: events as
`FeedbackEvent`s (the row path, the HTTP API), or as arrow columns named after
the `FeedbackEvent` fields (`EventColumns`, the columnar fast path). How the
rows reach the database (multi-row INSERT on SQLite, COPY on PostgreSQL) is
the store's own business.

The feedback table's event columns are the `FeedbackEvent` fields, in the
model's order, followed by the two columns only the store sets:

    >>> EVENT_FIELDS[:3], EVENT_COLUMNS[-3:]
    (('event_id', 'ts', 'model_version'), ('source', 'ingested_at', 'id_namespace'))
    >>> store.write_batch(Batch("feedback.jsonl", events, quarantine, Checkpoint("file:/x", "2048"), "files:x"))
    Written(accepted=1200, duplicates=3)
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import (
    TYPE_CHECKING,
    Any,
    NamedTuple,
    NotRequired,
    TypedDict,
    Union,
)

from driftloop.core.types import FeedbackEvent

if TYPE_CHECKING:
    import pyarrow as pa

# The feedback table's columns: one per FeedbackEvent field, then what the store adds.
EVENT_FIELDS: tuple[str, ...] = tuple(FeedbackEvent.model_fields)
STORE_COLUMNS: tuple[str, ...] = ("source", "ingested_at", "id_namespace")
EVENT_COLUMNS: tuple[str, ...] = EVENT_FIELDS + STORE_COLUMNS


def field_kind(name: str) -> str:
    """How a field is stored: `time` (timestamptz), `json` (a dict or list), else `plain`.

    Read off the field's annotation (`X | None` counts as X), so a new field
    needs no entry anywhere else.
    """
    ann = FeedbackEvent.model_fields[name].annotation
    if typing.get_origin(ann) in (Union, types.UnionType):
        ann = next(a for a in typing.get_args(ann) if a is not type(None))
    base = typing.get_origin(ann) or ann
    if base is datetime:
        return "time"
    if base in (dict, list):
        return "json"
    return "plain"


def field_default(name: str) -> Any:
    """The value a field takes when an event (or a column block) does not give it."""
    return FeedbackEvent.model_fields[name].get_default(call_default_factory=True)


class Checkpoint(NamedTuple):
    """How far a source has been read: its key and the position after the batch (text the source defines)."""

    key: str
    position: str


class QuarantineRow(TypedDict):
    """A row that could not be accepted, as read (redacted), with the field at fault and the reason.

    `content_id` (see `quarantine.quarantine_id`) makes a row quarantined twice a
    single row; without one the store hashes source, raw, field and reason.
    `line` is where the row was in its file (the 1-based line where it starts;
    a Parquet file's row number) and `row_key` a SQL row's key as JSON.
    """

    source: str
    raw: str
    field: str
    reason: str
    content_id: NotRequired[str]
    line: NotRequired[int]
    row_key: NotRequired[str]


@dataclass
class EventTable:
    """Events of one parsed table as arrow arrays, by `FeedbackEvent` field name.

    Column types: `ts` a UTC timestamp (`timestamp[us]`, with or without
    tz="UTC"), dict fields JSON text, the others the field's own type. A field
    without a column takes its default on every row. `events` gives some rows
    whole (row number -> event): those rows' values in the columns are
    ignored. `plain` promises that no string holds a backslash, tab, CR or
    line feed (the PostgreSQL path then skips looking for characters to escape).
    """

    columns: dict[str, pa.Array]
    events: dict[int, FeedbackEvent] = field(default_factory=dict)
    plain: bool = False

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __reduce__(self) -> tuple:
        # Pickled (to cross from a parse process) with the events as tuples: half the bytes and time.
        return _table, (self.columns, {j: _pack(e.__dict__) for j, e in self.events.items()}, self.plain)


@dataclass
class EventColumns:
    """A batch's events in column form: parsed tables and single events, each row with its position.

    Positions order the rows (the first of two events with one id wins,
    whichever part holds it); `events` is in ascending position.
    """

    tables: list[tuple[list[int], EventTable]] = field(default_factory=list)
    events: list[tuple[int, FeedbackEvent]] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(idx) for idx, _ in self.tables) + len(self.events)

    def __reduce__(self) -> tuple:
        return _columns, (self.tables, [(i, _pack(e.__dict__)) for i, e in self.events])


_pack = itemgetter(*EVENT_FIELDS)  # an event's field values, in EVENT_FIELDS order


def _unpack(values: tuple) -> FeedbackEvent:
    """The event whose field values `_pack` took; no validation, as they were valid when it was made."""
    e = object.__new__(FeedbackEvent)
    d = dict(zip(EVENT_FIELDS, values))
    object.__setattr__(e, "__dict__", d)
    object.__setattr__(e, "__pydantic_fields_set__", set(d))
    object.__setattr__(e, "__pydantic_extra__", None)
    object.__setattr__(e, "__pydantic_private__", None)
    return e


def _table(columns: dict[str, pa.Array], events: dict[int, tuple], plain: bool) -> EventTable:
    return EventTable(columns, {j: _unpack(v) for j, v in events.items()}, plain)


def _columns(tables: list[tuple[list[int], EventTable]], events: list[tuple[int, tuple]]) -> EventColumns:
    return EventColumns(tables, [(i, _unpack(v)) for i, v in events])


class Encoded(NamedTuple):
    """A batch's events in the form the store writes them (`Store.prepare`); opaque to callers.

    `rows`: tuples in EVENT_COLUMNS order in the driver's types, or COPY text
    (PostgreSQL, distinct event ids); `n_rows`: rows in `rows`; `total`: the
    events given, in-batch duplicates included.
    """

    rows: list[tuple] | bytes
    n_rows: int
    total: int
    dialect: str


@dataclass
class Batch:
    """One transaction's worth: events, the rows quarantined among them, and the checkpoint after them.

    `source` is stored with every event (a file path, an HTTP route, a SQL
    source). `events` are `FeedbackEvent`s, `EventColumns`, or what
    `Store.prepare` made of either. `id_namespace` is the source's id
    namespace (its parser's): an event id is unique within it, so an explicit
    id another source stored is no duplicate here. '' is the namespace of
    rows stored before namespaces were recorded (see `Store.write_batch`).
    """

    source: str
    events: Sequence[FeedbackEvent] | EventColumns | Encoded = ()
    quarantine: Sequence[QuarantineRow] = ()
    checkpoint: Checkpoint | None = None
    id_namespace: str = ""


class Written(NamedTuple):
    """What a batch did: events stored, and events skipped as already stored or repeated in the batch."""

    accepted: int
    duplicates: int


__all__ = [
    "EVENT_COLUMNS",
    "EVENT_FIELDS",
    "STORE_COLUMNS",
    "Batch",
    "Checkpoint",
    "Encoded",
    "EventColumns",
    "EventTable",
    "QuarantineRow",
    "Written",
    "field_default",
    "field_kind",
]
