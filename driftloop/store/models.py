"""SQLAlchemy 2 tables of the feedback store (typed declarative mapping).

The schema itself is created by the Alembic migrations in `migrations/`; these
classes describe it to the ORM and to `Store`. Timestamps are always stored in
UTC: `UTCDateTime` refuses naive datetimes and hands back aware UTC ones on
both SQLite (which has no time-zone type) and PostgreSQL (`timestamptz`).

    >>> from driftloop.store.models import Base, Feedback
    >>> sorted(Base.metadata.tables)[:3]
    ['eval_item', 'feedback', 'ingest_checkpoint']
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, PrimaryKeyConstraint, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from driftloop.core.types import FeedbackEvent

# Longest source name or checkpoint key (a file path, an HTTP route, a table).
SOURCE_LEN = 1024


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored in UTC; naive values are an error.

    SQLite's DATETIME keeps no offset, so values are converted to UTC before
    they are written and marked UTC when read back; on PostgreSQL the column is
    `timestamp with time zone` and the value is converted to UTC on read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store needs timezone-aware timestamps")
        value = value.astimezone(UTC)
        # SQLite would otherwise write the wall-clock digits and drop the offset.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Feedback(Base):
    """One accepted feedback event: a column per `driftloop.core.types.FeedbackEvent` field, then source,
    ingested_at and id_namespace."""

    __tablename__ = "feedback"
    # Namespace first: "is any row unscoped" and "is this id taken unscoped" are seeks on the key.
    __table_args__ = (PrimaryKeyConstraint("id_namespace", "event_id", name="pk_feedback"),)

    event_id: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(index=True)
    model_version: Mapped[str] = mapped_column(String(128), default="")
    prompt: Mapped[str] = mapped_column(Text)
    response: Mapped[str] = mapped_column(Text, default="")
    rating: Mapped[float | None] = mapped_column(Float)  # normalised to [0, 1]
    rating_raw: Mapped[str | None] = mapped_column(String(64))
    thumbs_up: Mapped[bool | None] = mapped_column(Boolean)
    correction: Mapped[str | None] = mapped_column(Text)
    segment: Mapped[dict[str, Any]] = mapped_column(default=dict)
    latency_ms: Mapped[float | None] = mapped_column(Float)  # milliseconds
    tokens_in: Mapped[int | None] = mapped_column(Integer)
    tokens_out: Mapped[int | None] = mapped_column(Integer)
    # `metadata` is reserved on declarative classes, so the attribute is renamed.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    source: Mapped[str] = mapped_column(String(SOURCE_LEN), default="")
    ingested_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The id namespace of the source that stored the event: the key is (id_namespace, event_id), so
    # an explicit id is unique within its source's namespace only. '' on rows stored before 0006,
    # whose ids stay taken in every namespace (see `repo.Store.write_batch`).
    id_namespace: Mapped[str] = mapped_column(String(SOURCE_LEN), default="")


def _sql_type(name: str) -> Any:
    """The column type of a `FeedbackEvent` field, read off its annotation (`batch.field_kind`)."""
    from driftloop.store.batch import field_kind

    kind = field_kind(name)
    if kind == "time":
        return UTCDateTime()
    if kind == "json":
        return JSON()
    ann = FeedbackEvent.model_fields[name].annotation
    base = next((t for t in (bool, int, float, str) if ann is t or t in getattr(ann, "__args__", ())), str)
    return {bool: Boolean(), int: Integer(), float: Float(), str: Text()}[base]


def _add_event_columns() -> None:
    """Give `Feedback` a nullable column for each `FeedbackEvent` field it does not declare.

    The columns declared above say what an annotation cannot (lengths, the
    key, an index); an optional field added to the event later gets its
    column here, typed from the annotation, and needs only its migration.
    """
    table = Feedback.__table__
    for name in FeedbackEvent.model_fields:
        if name not in table.c:
            setattr(Feedback, name, mapped_column(name, _sql_type(name), nullable=True))


_add_event_columns()


class Quarantine(Base):
    """A row that could not be accepted, kept as read with the reason."""

    __tablename__ = "quarantine"
    __table_args__ = (Index("ux_quarantine_content_id", "content_id", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(SOURCE_LEN))
    raw: Mapped[str] = mapped_column(Text)
    field: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Hash of the source's id namespace and the row (see `quarantine.quarantine_id`): a row quarantined
    # again (a retry, a copied file, a concurrent ingest) is skipped. NULL on rows from before.
    content_id: Mapped[str | None] = mapped_column(String(32))
    # Where the row was: the 1-based line of a JSONL or CSV file (a Parquet file's row number),
    # or a SQL source's row key as JSON. NULL where the source has neither, and on rows from before.
    line: Mapped[int | None] = mapped_column(BigInteger)
    row_key: Mapped[str | None] = mapped_column(String(256))


class IngestCheckpoint(Base):
    """How far a source has been read (a byte offset, or a watermark)."""

    __tablename__ = "ingest_checkpoint"

    source_key: Mapped[str] = mapped_column(String(SOURCE_LEN), primary_key=True)
    position: Mapped[str] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoopState(Base):
    """The loop's current state per project, with its lease and a CAS version."""

    __tablename__ = "loop_state"

    project: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    since: Mapped[datetime] = mapped_column()
    reason: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    lease_owner: Mapped[str | None] = mapped_column(String(256))
    lease_expires: Mapped[datetime | None] = mapped_column()
    version: Mapped[int] = mapped_column(Integer, default=0)


class LoopTransition(Base):
    """One successful state transition (append-only history)."""

    __tablename__ = "loop_transition"
    __table_args__ = (Index("ix_loop_transition_project_id", "project", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(128))
    from_state: Mapped[str] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    owner: Mapped[str] = mapped_column(String(256))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class EvalItem(Base):
    """A corrected prompt turned into an evaluation or training item; insert-only."""

    __tablename__ = "eval_item"

    item_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    prompt_key: Mapped[str] = mapped_column(String(64), index=True)  # hash of the normalised prompt
    split: Mapped[str] = mapped_column(String(16))  # 'golden' | 'train'
    prompt: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)  # the user's correction
    response: Mapped[str] = mapped_column(Text, default="")  # what the model had said
    segment: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source_event_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SampleResult(Base):
    """One item's outcome in one cached benchmark run (keyed by the cache key)."""

    __tablename__ = "sample_result"

    cache_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    task: Mapped[str] = mapped_column(String(255))
    model: Mapped[str] = mapped_column(String(255))
    metric: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[float] = mapped_column(Float)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


__all__ = [
    "Base",
    "EvalItem",
    "Feedback",
    "IngestCheckpoint",
    "LoopState",
    "LoopTransition",
    "Quarantine",
    "SampleResult",
    "UTCDateTime",
    "utcnow",
]


class AlertDeadLetter(Base):
    """An alert delivery that failed after every retry, kept with its exact body until re-sent."""

    __tablename__ = "alert_dead_letter"
    __table_args__ = (Index("ix_alert_dead_letter_pending", "delivered_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    webhook: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)  # the rendered payload, re-sent byte for byte
    last_error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # every attempt so far, retries included
    delivered_at: Mapped[datetime | None] = mapped_column()  # set when a re-send succeeds
    discarded_at: Mapped[datetime | None] = mapped_column()  # set by `driftloop alerts discard`: never re-sent


__all__ += ["AlertDeadLetter"]


class WebhookDelivery(Base):
    """An incoming webhook delivery (MLflow registry), claimed once by its id; the evaluation it started."""

    __tablename__ = "webhook_delivery"

    delivery_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    run_id: Mapped[str | None] = mapped_column(String(64))


__all__ += ["WebhookDelivery"]


class TraceLink(Base):
    """Span `span_id` of trace `trace_id` became event `event_id` of `source` (see `store.traces`)."""

    __tablename__ = "trace_link"

    trace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    span_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(SOURCE_LEN))
    ended_at: Mapped[datetime | None] = mapped_column()


class TraceRating(Base):
    """A rating posted with a trace id, waiting for its span (deleted once applied or quarantined)."""

    __tablename__ = "trace_rating"
    __table_args__ = (
        Index("ix_trace_rating_trace_id", "trace_id"),
        Index("ix_trace_rating_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trace_id: Mapped[str] = mapped_column(String(64))
    span_id: Mapped[str] = mapped_column(String(16))
    rating: Mapped[float | None] = mapped_column(Float)
    rating_raw: Mapped[str | None] = mapped_column(String(64))
    thumbs_up: Mapped[bool | None] = mapped_column(Boolean)
    correction: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(SOURCE_LEN))
    received_at: Mapped[datetime] = mapped_column()


__all__ += ["TraceLink", "TraceRating"]
