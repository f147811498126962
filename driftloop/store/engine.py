"""Engines for the two supported databases, and the one insert that both share.

SQLite gets WAL (readers never block the writer), a 30 s busy timeout and
foreign keys. Its driver's own transaction handling is switched off so that
write transactions can start with `BEGIN IMMEDIATE`: a transaction that reads
and then writes (a compare-and-set) takes the write lock up front instead of
failing with "database is locked" when another process committed in between.
PostgreSQL is reached through psycopg 3 (`postgresql+psycopg://`).

    >>> engine = make_engine("sqlite:///store.db")
    >>> writer = engine.execution_options(**WRITE)   # BEGIN IMMEDIATE on SQLite
    >>> with writer.begin() as conn:
    ...     n = insert_ignore(conn, table, rows, ["event_id"])
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import StaticPool

# Execution option that marks a write transaction (BEGIN IMMEDIATE on SQLite).
WRITE = {"driftloop_write": True}
BUSY_TIMEOUT_S = 30
SQLITE_MAX_PARAMS = 32766  # bound parameters per statement (SQLite >= 3.32)
SQLITE_CHUNK_ROWS = 1024  # most rows per multi-row INSERT


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine for `url`, configured for concurrent use by several processes.

    SQLite file URLs get their parent folder created; `sqlite://` (in memory)
    uses one shared connection so every call sees the same database. Any other
    backend than SQLite and PostgreSQL is refused, since the store relies on
    `INSERT ... ON CONFLICT` and JSON path extraction of exactly these two.
    """
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "postgresql":
        # pre_ping: a long-lived flow survives a database restart.
        return create_engine(u, pool_pre_ping=True)
    if backend != "sqlite":
        raise ValueError(
            f"unsupported store URL {u.render_as_string(hide_password=True)!r}: use sqlite:/// or postgresql+psycopg://"
        )
    # SQLite's json_extract (3.40) matches object keys as stored: keep non-ASCII
    # keys unescaped, or a segment field such as "löcale" would never match.
    kw: dict[str, Any] = {"json_serializer": lambda obj: json.dumps(obj, ensure_ascii=False)}
    if u.database in (None, "", ":memory:"):
        engine = create_engine(u, poolclass=StaticPool, connect_args={"check_same_thread": False}, **kw)
    else:
        Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, connect_args={"timeout": BUSY_TIMEOUT_S}, **kw)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # None: the driver never opens transactions itself; `_on_begin` does.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")  # milliseconds
        cur.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable in WAL mode except across an OS crash: the last
        # transactions may roll back, never corrupt.
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("driftloop_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def insert_ignore(conn: Connection, table: Table, rows: list[dict[str, Any]], keys: list[str]) -> int:
    """INSERT rows, skipping those whose `keys` already exist; return how many were inserted.

    Uses `INSERT ... ON CONFLICT DO NOTHING RETURNING` on both SQLite and
    PostgreSQL and counts the returned keys, which stays right for batches
    (driver row counts of multi-row inserts are not reliable across drivers).
    """
    if not rows:
        return 0
    name = conn.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # pragma: no cover - make_engine refuses other backends
        raise ValueError(f"unsupported dialect {name}")
    stmt = insert(table).on_conflict_do_nothing(index_elements=keys).returning(*(table.c[k] for k in keys))
    return len(conn.execute(stmt, rows).all())


def upsert(conn: Connection, table: Table, row: dict[str, Any], keys: list[str]) -> None:
    """INSERT one row, or UPDATE its non-key columns where `keys` already exist."""
    name = conn.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    stmt = insert(table).values(**row)
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_={k: stmt.excluded[k] for k in row if k not in keys})
    conn.execute(stmt)


def bulk_insert_ignore(conn: Connection, table: Table, columns: list[str], rows: list[tuple] | bytes, key: str) -> int:
    """Bulk INSERT of rows (tuples in `columns` order) skipping existing `key`s; return how many were new.

    On PostgreSQL `rows` may also be COPY text (distinct `key`s).

    The fast path of ingestion, under the caller's transaction. SQLite: one
    `INSERT OR IGNORE` executemany on the driver connection, counted by the
    change counter. PostgreSQL: psycopg 3 COPY into a temporary table, then
    `INSERT ... SELECT ... ON CONFLICT DO NOTHING`, counted by its row count.
    Values must already be in the driver's types: see `driver_value`.
    """
    if not rows:
        return 0
    dbapi = conn.connection.driver_connection
    cols = ", ".join(columns)
    if conn.dialect.name == "sqlite":
        assert not isinstance(rows, bytes), "COPY text is for PostgreSQL"
        before = dbapi.total_changes
        _sqlite_insert_rows(dbapi, f"INSERT OR IGNORE INTO {table.name} ({cols}) VALUES ", len(columns), rows)
        return dbapi.total_changes - before
    tmp = f"_in_{table.name}"
    with dbapi.cursor() as cur:
        # ON COMMIT DELETE ROWS: the staging table is empty at the start of every transaction.
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {tmp} (LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        cur.execute(f"TRUNCATE {tmp}")
        copy_into(cur, f"{tmp} ({cols})", rows)
        cur.execute(f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM {tmp} ON CONFLICT ({key}) DO NOTHING")
        return cur.rowcount


def copy_into(cur: Any, target: str, rows: list[tuple] | bytes) -> None:
    """psycopg 3 `COPY target FROM STDIN` of rows: tuples in the driver's types, or COPY text as it is."""
    with cur.copy(f"COPY {target} FROM STDIN") as copy:
        if isinstance(rows, bytes):
            copy.write(rows)
        else:
            for r in rows:
                copy.write_row(r)


def _sqlite_insert_rows(dbapi: Any, head: str, width: int, rows: list[tuple]) -> None:
    """Execute `head` + multi-row VALUES over `rows`, in chunks of power-of-two sizes.

    One statement per chunk instead of one step per row: the driver releases
    the GIL once per statement, not once per row, so a writer thread is not
    held up by parser threads at every row (measured: 1.3x the rows/s of
    executemany beside two parser threads). Power-of-two chunks keep the
    number of distinct statements (and the driver's statement cache) small.
    """
    import itertools

    size = 1
    while size * 2 <= min(SQLITE_CHUNK_ROWS, SQLITE_MAX_PARAMS // width):
        size *= 2
    one = "(" + ",".join("?" * width) + ")"
    i = 0
    while i < len(rows):
        while size > len(rows) - i:
            size //= 2
        dbapi.execute(head + ",".join([one] * size), list(itertools.chain.from_iterable(rows[i : i + size])))
        i += size


def driver_value(dialect: str, v: Any) -> Any:
    """A Python value as the bulk path hands it to the driver (datetimes in UTC, JSON as text)."""
    if isinstance(v, dict) or isinstance(v, list):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, datetime):
        v = v.astimezone(UTC)
        # SQLAlchemy's SQLite DATETIME text form, so ORM reads and range filters see the same values.
        return v.replace(tzinfo=None).isoformat(" ", "microseconds") if dialect == "sqlite" else v
    return v
