"""`Store`: the one place that reads and writes the feedback database.

Every write is one transaction: a batch of events, its quarantined rows and the
source's checkpoint commit together or not at all, so an interrupted ingestion
resumes exactly after its last committed batch. Duplicate events (by
`event_id` within the source's id namespace) are skipped and counted. Works on SQLite (one machine) and
PostgreSQL (`postgresql+psycopg://`), and is safe with several processes.

    >>> store = Store("sqlite:///.driftloop/store.db")
    >>> store.migrate()
    >>> store.write_batch(Batch("feedback.jsonl", events, quarantine, Checkpoint("file:/x", "2048")))
    Written(accepted=1200, duplicates=0)
    >>> df = store.read_window(start, end, segment_fields=["topic"])
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, delete, func, select, text

from driftloop.core.types import FeedbackEvent
from driftloop.store.batch import EVENT_COLUMNS, Batch, Checkpoint, Encoded, QuarantineRow, Written
from driftloop.store.encode import encode
from driftloop.store.engine import WRITE, bulk_insert_ignore, copy_into, driver_value, insert_ignore, make_engine
from driftloop.store.loop import LoopStateMixin
from driftloop.store.models import (
    EvalItem,
    Feedback,
    IngestCheckpoint,
    Quarantine,
    SampleResult,
    WebhookDelivery,
    utcnow,
)
from driftloop.store.quarantine import quarantine_rows
from driftloop.store.scope import drop_unscoped, has_unscoped

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Connection

MIGRATIONS = Path(__file__).with_name("migrations")
# Arbitrary constant key of the PostgreSQL advisory lock that serialises migrations.
_MIGRATE_LOCK = 7_310_315_001
WINDOW_COLUMNS = (
    "event_id",
    "ts",
    "model_version",
    "prompt_len",
    "response_len",
    "latency_ms",
    "tokens_in",
    "tokens_out",
    "rating",
    "thumbs_up",
    "has_correction",
)
SPLITS = ("golden", "train")

_FEEDBACK: Table = Feedback.__table__  # type: ignore[assignment]
_QUARANTINE: Table = Quarantine.__table__  # type: ignore[assignment]
_CHECKPOINT: Table = IngestCheckpoint.__table__  # type: ignore[assignment]
_ITEM: Table = EvalItem.__table__  # type: ignore[assignment]
_SAMPLE: Table = SampleResult.__table__  # type: ignore[assignment]
_DELIVERY: Table = WebhookDelivery.__table__  # type: ignore[assignment]


class Store(LoopStateMixin):
    """Repository over the feedback store at a SQLAlchemy URL (SQLite or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        # Same pool; its transactions start with BEGIN IMMEDIATE on SQLite.
        self._writer = self.engine.execution_options(**WRITE)

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Close every pooled connection (the store can still be used afterwards)."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- schema
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision; a no-op when it is there.

        The Alembic config is built in code from the migrations folder inside
        the package, so this works from an installed package and any working
        directory. Concurrent callers are serialised (an advisory lock on
        PostgreSQL, the write lock on SQLite).
        """
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
        with self._writer.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    # --------------------------------------------------------------- feedback
    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.engine.dialect.name

    def prepare(self, batch: Batch) -> Batch:
        """The batch with its events already in the form this store writes; no database work.

        `write_batch` does this itself; calling it first, in the thread that
        built the batch, takes the conversion (COPY text on PostgreSQL, row
        tuples on SQLite) off the writer's thread. The ingestion time stored
        with the events is taken here.
        """
        if isinstance(batch.events, Encoded):
            return batch
        now = driver_value(self.dialect, utcnow())
        enc = encode(batch.events, self.dialect, batch.source, now, batch.id_namespace)
        return Batch(batch.source, enc, batch.quarantine, batch.checkpoint, batch.id_namespace)

    def write_batch(self, batch: Batch) -> Written:
        """Write a batch's events, its quarantined rows and its checkpoint in one transaction.

        An event whose `event_id` is already stored in the batch's id
        namespace, or stored by an older version (namespace ''; those ids
        stay taken in every namespace), or appears earlier in the same batch,
        is skipped and counted as a duplicate; a quarantined row whose content
        id is stored already is skipped; the checkpoint is overwritten. SQLite
        takes multi-row `INSERT OR IGNORE`s; PostgreSQL a COPY straight into
        the table, or, where an id is stored already, through a staging table
        with `ON CONFLICT DO NOTHING`.
        """
        batch = self.prepare(batch)
        with self._writer.begin() as conn:
            return self.write_batch_in(conn, batch)

    def write_transaction(self) -> AbstractContextManager[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite) for `write_batch_in` and the other `*_in` writers."""
        return self._writer.begin()

    def write_batch_in(self, conn: Connection, batch: Batch) -> Written:
        """`write_batch` inside the caller's write transaction (`write_transaction`): several batches, one commit.

        The counts are this batch's own: an event an earlier batch of the same
        transaction stored is a duplicate here.
        """
        enc = self.prepare(batch).events
        assert isinstance(enc, Encoded)
        if enc.dialect != self.dialect:
            raise ValueError(f"write_batch: events prepared for {enc.dialect}, this store is {self.dialect}")
        rows, n = enc.rows, enc.n_rows
        if n and batch.id_namespace and has_unscoped(conn):
            rows, n = drop_unscoped(conn, rows)
        if not n:
            accepted = 0
        elif enc.dialect == "sqlite":
            assert isinstance(rows, list)
            accepted = bulk_insert_ignore(conn, _FEEDBACK, list(EVENT_COLUMNS), rows, _KEY)
        else:
            accepted = _pg_copy_new(conn, rows, n)
        _write_side_rows(conn.connection.driver_connection, self.dialect, batch.quarantine, batch.checkpoint)
        return Written(accepted, enc.total - accepted)

    def add_events(
        self, events: Sequence[FeedbackEvent], source: str, checkpoint: tuple[str, str] | None = None
    ) -> Written:
        """`write_batch` of events alone: (accepted, duplicates)."""
        return self.write_batch(Batch(source, events, (), _checkpoint(checkpoint)))

    def add_batch(
        self,
        events: Sequence[FeedbackEvent],
        quarantine: Sequence[QuarantineRow],
        source: str,
        checkpoint: tuple[str, str] | None = None,
    ) -> Written:
        """`write_batch` with the batch's parts as arguments, for callers that predate `Batch`."""
        return self.write_batch(Batch(source, events, quarantine, _checkpoint(checkpoint)))

    def add_quarantine(self, rows: Sequence[QuarantineRow]) -> int:
        """Store rows that could not be accepted (keys source, raw, field, reason; content_id optional).

        Returns how many were given; one whose content id is stored already is skipped.
        """
        self.write_batch(Batch("", (), rows))
        return len(rows)

    def get_checkpoint(self, source_key: str) -> str | None:
        """The last committed position of a source, or None if it was never read."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(_CHECKPOINT.c.position).where(_CHECKPOINT.c.source_key == source_key)
            ).scalar_one_or_none()

    def count_events(self) -> int:
        """Number of stored feedback events."""
        return self._count(_FEEDBACK)

    def count_quarantine(self) -> int:
        """Number of quarantined rows."""
        return self._count(_QUARANTINE)

    def _count(self, table: Table) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    def time_bounds(self) -> tuple[datetime, datetime] | None:
        """(oldest, newest) event timestamp as aware UTC datetimes, or None when the store is empty."""
        with self.engine.connect() as conn:
            lo, hi = conn.execute(select(func.min(_FEEDBACK.c.ts), func.max(_FEEDBACK.c.ts))).one()
        return None if lo is None else (lo, hi)

    def read_window(self, start: datetime, end: datetime, segment_fields: list[str]) -> pd.DataFrame:
        """Events with start <= ts < end as a frame of numbers and segments, never the texts.

        Columns, in order: event_id, ts (UTC), model_version, prompt_len and
        response_len (characters, computed by the database), latency_ms,
        tokens_in, tokens_out and rating (float, NaN when absent), thumbs_up
        (1.0/0.0/NaN), has_correction (bool), then one string column per
        segment field ("" when the event lacks it). Rows are ordered by ts.
        """
        import numpy as np
        import pandas as pd

        for name, t in (("start", start), ("end", end)):
            if t.tzinfo is None:
                raise ValueError(f"read_window: {name} must be timezone-aware, got {t!r}")
        fields = list(dict.fromkeys(segment_fields))
        clash = [f for f in fields if f in WINDOW_COLUMNS]
        if clash:
            raise ValueError(f"read_window: segment field(s) {clash} clash with the window's own columns")
        f = _FEEDBACK.c
        cols = [
            f.event_id,
            f.ts,
            f.model_version,
            func.length(f.prompt),
            func.length(f.response),
            f.latency_ms,
            f.tokens_in,
            f.tokens_out,
            f.rating,
            f.thumbs_up,
            f.correction.is_not(None),
        ]
        # JSON path extraction in SQL: json_extract on SQLite, ->> on PostgreSQL.
        cols += [func.coalesce(f.segment[k].as_string(), "") for k in fields]
        stmt = select(*cols).where(f.ts >= start, f.ts < end).order_by(f.ts, f.event_id)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        col = list(zip(*rows)) if rows else [()] * len(cols)

        def floats(values: tuple) -> np.ndarray:
            return np.array([np.nan if v is None else float(v) for v in values], dtype=float)

        data: dict[str, Any] = {
            "event_id": pd.Series(col[0], dtype=object),
            "ts": pd.Series(pd.to_datetime(list(col[1]), utc=True)),
            "model_version": pd.Series(col[2], dtype=object),
            "prompt_len": np.array(col[3], dtype=np.int64),
            "response_len": np.array(col[4], dtype=np.int64),
        }
        for i, name in enumerate(("latency_ms", "tokens_in", "tokens_out", "rating", "thumbs_up"), start=5):
            data[name] = floats(col[i])
        data["has_correction"] = np.array([bool(v) for v in col[10]], dtype=bool)
        for i, k in enumerate(fields, start=11):
            data[k] = pd.Series(col[i], dtype=object)
        return pd.DataFrame(data)

    def corrected_events(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Events that carry a correction (ts >= since), ordered by ts then event_id.

        Each dict has event_id, ts, prompt, response, correction and segment.
        """
        f = _FEEDBACK.c
        stmt = select(f.event_id, f.ts, f.prompt, f.response, f.correction, f.segment).where(f.correction.is_not(None))
        if since is not None:
            stmt = stmt.where(f.ts >= since)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt.order_by(f.ts, f.event_id)).mappings()]

    # ------------------------------------------------------- webhook deliveries
    def claim_delivery(self, delivery_id: str) -> bool:
        """True for the one caller that records `delivery_id` first; False for every other.

        One `INSERT ... ON CONFLICT DO NOTHING`: concurrent deliveries of one
        id, in any process or replica, cannot both win.
        """
        with self._writer.begin() as conn:
            return (
                insert_ignore(conn, _DELIVERY, [{"delivery_id": delivery_id, "received_at": utcnow()}], ["delivery_id"])
                == 1
            )

    def settle_delivery(self, delivery_id: str, run_id: str | None) -> None:
        """Record the evaluation a claimed delivery started, or give the claim up (None) so a retry may start one."""
        with self._writer.begin() as conn:
            d = _DELIVERY.c
            if run_id is None:
                conn.execute(delete(_DELIVERY).where(d.delivery_id == delivery_id))
            else:
                conn.execute(_DELIVERY.update().where(d.delivery_id == delivery_id).values(run_id=run_id))

    def delivery_run(self, delivery_id: str) -> str | None:
        """The evaluation a delivery started ('' while the one that claimed it is still starting it), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(_DELIVERY.c.run_id).where(_DELIVERY.c.delivery_id == delivery_id)).first()
        return None if row is None else (row[0] or "")

    # ------------------------------------------------------------- eval items
    def add_items(self, items: list[dict[str, Any]]) -> int:
        """Insert evaluation items; return how many were new. Insert-only.

        Each dict needs item_id, prompt_key, split ('golden' or 'train'), prompt
        and answer; response, segment and source_event_id are optional. An
        item_id already stored is left exactly as it is, so an item never
        changes split (a golden item stays golden).
        """
        rows, seen = [], set()
        for it in items:
            if it["split"] not in SPLITS:
                raise ValueError(
                    f"add_items: item {it['item_id']!r}: split must be one of {SPLITS}, got {it['split']!r}"
                )
            if it["item_id"] in seen:
                continue
            seen.add(it["item_id"])
            rows.append(
                {
                    "item_id": it["item_id"],
                    "prompt_key": it["prompt_key"],
                    "split": it["split"],
                    "prompt": it["prompt"],
                    "answer": it["answer"],
                    "response": it.get("response") or "",
                    "segment": dict(it.get("segment") or {}),
                    "source_event_id": it.get("source_event_id"),
                    "created_at": utcnow(),
                }
            )
        with self._writer.begin() as conn:
            return insert_ignore(conn, _ITEM, rows, ["item_id"])

    def items(self, split: str | None = None) -> list[dict[str, Any]]:
        """Stored items (all columns as dicts), optionally of one split, oldest first."""
        stmt = select(_ITEM)
        if split is not None:
            stmt = stmt.where(_ITEM.c.split == split)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt.order_by(_ITEM.c.created_at, _ITEM.c.item_id)).mappings()]

    def item_splits(self) -> dict[str, str]:
        """prompt_key -> split of every stored item; 'golden' wins if a key has both."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_ITEM.c.prompt_key, _ITEM.c.split).distinct()).all()
        out: dict[str, str] = {}
        for key, split in rows:
            if out.get(key) != "golden":
                out[key] = split
        return out

    # ------------------------------------------------------- sample results
    def save_samples(
        self,
        cache_key: str,
        task: str,
        model: str,
        metric: str,
        items: dict[str, float],
        detail: dict[str, dict[str, Any]],
    ) -> None:
        """Store one benchmark run's per-item outcomes under `cache_key`, replacing any earlier ones."""
        now = utcnow()
        rows = [
            {
                "cache_key": cache_key,
                "item_id": str(k),
                "task": task,
                "model": model,
                "metric": metric,
                "outcome": float(v),
                "detail": detail.get(k) or {},
                "created_at": now,
            }
            for k, v in items.items()
        ]
        with self._writer.begin() as conn:
            conn.execute(delete(_SAMPLE).where(_SAMPLE.c.cache_key == cache_key))
            if rows:
                conn.execute(_SAMPLE.insert(), rows)

    def load_samples(self, cache_key: str) -> dict[str, Any] | None:
        """The run saved under `cache_key` as {task, model, metric, items, detail}, or None.

        The dict has the fields of `driftloop.core.types.SampleResults`; `detail`
        holds only the items that had any.
        """
        stmt = select(_SAMPLE).where(_SAMPLE.c.cache_key == cache_key).order_by(_SAMPLE.c.item_id)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        if not rows:
            return None
        first = rows[0]
        return {
            "task": first["task"],
            "model": first["model"],
            "metric": first["metric"],
            "items": {r["item_id"]: r["outcome"] for r in rows},
            "detail": {r["item_id"]: r["detail"] for r in rows if r["detail"]},
        }


_KEY = "id_namespace, event_id"  # the feedback table's key: an id is unique within its namespace
_QUARANTINE_SQL = (
    "INSERT INTO quarantine (source, raw, field, reason, created_at, content_id, line, row_key) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (content_id) DO NOTHING"
)
_CHECKPOINT_SQL = (
    "INSERT INTO ingest_checkpoint (source_key, position, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (source_key) DO UPDATE SET position = excluded.position, "
    "updated_at = excluded.updated_at"
)


def _checkpoint(c: tuple[str, str] | None) -> Checkpoint | None:
    return None if c is None else Checkpoint(*c)


def _write_side_rows(
    dbapi: Any, dialect: str, quarantine: Sequence[QuarantineRow], checkpoint: Checkpoint | None
) -> None:
    """A batch's quarantine rows and checkpoint, on the driver: SQLAlchemy's per-statement cost is per batch here."""
    now = driver_value(dialect, utcnow())
    q_sql, c_sql = (
        (_QUARANTINE_SQL, _CHECKPOINT_SQL)
        if dialect == "sqlite"
        else (_QUARANTINE_SQL.replace("?", "%s"), _CHECKPOINT_SQL.replace("?", "%s"))
    )
    cur = dbapi.cursor()
    try:
        if quarantine:
            cur.executemany(q_sql, [tuple({**q, "created_at": now}.values()) for q in quarantine_rows(quarantine)])
        if checkpoint is not None:
            cur.execute(c_sql, (checkpoint[0], checkpoint[1], now))
    finally:
        cur.close()


def _pg_copy_new(conn: Any, rows: list[tuple] | bytes, n: int | None = None) -> int:
    """COPY rows (distinct event_ids, one namespace) straight into feedback; return how many were new.

    `rows` are tuples in the driver's types, or `n` rows already in COPY text.
    Optimistic: one write per row instead of the staging table's two (COPY,
    then INSERT ... SELECT ... ON CONFLICT). Where an id is already stored (a
    rerun, a duplicate across batches, another writer), the COPY's unique
    violation is rolled back to a savepoint and the batch takes the
    conflict-safe staging path of `bulk_insert_ignore`.
    """
    import psycopg

    if not rows:
        return 0
    dbapi = conn.connection.driver_connection
    try:
        with dbapi.transaction(), dbapi.cursor() as cur:  # a savepoint inside the caller's transaction
            copy_into(cur, f"feedback ({', '.join(EVENT_COLUMNS)})", rows)
    except psycopg.errors.UniqueViolation:
        return bulk_insert_ignore(conn, _FEEDBACK, list(EVENT_COLUMNS), rows, _KEY)
    return n if isinstance(rows, bytes) and n is not None else len(rows)
