"""SQL sources: a team's table or query read incrementally by a watermark, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from driftloop.core.config import SqlSource, load_config
from driftloop.core.errors import InputError
from driftloop.ingest import ingest_config
from driftloop.ingest.sql import dump_watermark, ingest_sql, load_watermark

T0 = datetime(2026, 11, 1, 10, tzinfo=UTC)
MAPPING = {
    "fields": {"event_id": "id", "prompt": "question", "rating": "stars", "ts": "created"},
    "segment_fields": ["locale"],
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def team_db(request, tmp_path):
    """(URL, table name) of an empty feedback_log table in the team's own database."""
    name = f"log_{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        url, ts_type = f"sqlite:///{tmp_path / 'team.db'}", "TEXT"  # ISO-8601 text with its offset
    else:
        url, ts_type = request.getfixturevalue("pg_url"), "TIMESTAMPTZ"
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(
            text(
                f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, created {ts_type} NOT NULL, "
                f"question TEXT, stars INTEGER, locale TEXT, contact TEXT)"
            )
        )
    eng.dispose()
    return url, name


def insert(url: str, table: str, ids: range, ts=lambda i: T0 + timedelta(minutes=i), stars=lambda i: 1 + i % 5):
    eng = create_engine(url)
    with eng.begin() as c:
        for i in ids:
            t = ts(i)
            c.execute(
                text(f"INSERT INTO {table} VALUES (:id, :ts, :q, :s, :l, :m)"),
                {
                    "id": i,
                    "ts": t.isoformat() if eng.dialect.name == "sqlite" else t,
                    "q": f"q{i}",
                    "s": stars(i),
                    "l": "de" if i % 2 else "fr",
                    "m": f"user{i}@example.com",
                },
            )
    eng.dispose()


def test_table_is_read_incrementally_by_id_and_reruns_add_nothing(store, team_db):
    url, table = team_db
    insert(url, table, range(1, 21), stars=lambda i: 9 if i == 7 else 1 + i % 5)
    src = SqlSource(url=url, table=table, watermark="id", batch_rows=4, mapping=MAPPING)
    r = ingest_sql(store, src)
    assert (r.read, r.accepted, r.duplicates, r.quarantined) == (20, 19, 0, 1) and r.balanced
    assert r.reasons == {"stars (-> rating): not 1-5 stars": 1} and r.redacted == {"email": 20}
    assert ingest_sql(store, src).read == 0
    insert(url, table, range(21, 26))
    again = ingest_sql(store, src)
    assert (again.read, again.accepted) == (5, 5) and store.count_events() == 24
    with store.engine.connect() as c:
        row = c.execute(
            text("SELECT event_id, prompt, rating, segment, metadata FROM feedback WHERE event_id = '3'")
        ).one()
    assert row[1:3] == ("q3", 0.75) and "de" in str(row[3]) and "[EMAIL]" in str(row[4])
    assert "example.com" not in str(row[4])


def test_a_timestamp_watermark_never_splits_rows_that_share_it(store, team_db):
    url, table = team_db
    # Ten rows, only three distinct timestamps: batches of 2 must still take each tie whole.
    insert(url, table, range(1, 11), ts=lambda i: T0 + timedelta(minutes=i // 4))
    src = SqlSource(url=url, table=table, watermark="created", batch_rows=2, mapping=MAPPING)
    r = ingest_sql(store, src)
    assert (r.read, r.accepted) == (10, 10)
    insert(url, table, range(11, 14), ts=lambda i: T0 + timedelta(hours=1, minutes=i))
    assert (ingest_sql(store, src).accepted, ingest_sql(store, src).read) == (3, 0)
    assert store.count_events() == 13


def test_a_query_source_reads_only_its_rows_and_keeps_its_own_checkpoint(store, team_db):
    url, table = team_db
    insert(url, table, range(1, 11))
    q = SqlSource(
        url=url,
        query=f"SELECT id, created, question, stars FROM {table} WHERE locale = 'de'",
        watermark="id",
        name="german",
        mapping={**MAPPING, "segment_fields": []},
        id_namespace="sql:team",  # ids are unique within a namespace: two views of one table share theirs
    )
    r = ingest_sql(store, q)
    assert (r.read, r.accepted) == (5, 5) and store.get_checkpoint("sql:german") is not None
    table_source = {"kind": "sql", "url": url, "table": table, "watermark": "id", "mapping": MAPPING}
    cfg = load_config(
        None, env={}, check_files=False, overrides={"sources": [{**table_source, "id_namespace": "sql:team"}]}
    )
    both = ingest_config(cfg, store)
    assert (both.read, both.accepted, both.duplicates) == (10, 5, 5)


def test_a_wrong_table_or_column_is_an_input_error_naming_it(sqlite_store, team_db):
    url, table = team_db
    with pytest.raises(InputError, match="no table 'nope'"):
        ingest_sql(sqlite_store, SqlSource(url=url, table="nope", watermark="id"))
    with pytest.raises(InputError, match="no column 'updated'"):
        ingest_sql(sqlite_store, SqlSource(url=url, table=table, watermark="updated"))
    assert sqlite_store.count_events() == 0


@pytest.mark.parametrize("value", [7, 2.5, "b", T0, T0.date()])
def test_watermarks_round_trip_with_their_type(value):
    assert load_watermark(dump_watermark(value)) == value and type(load_watermark(dump_watermark(value))) is type(value)


def test_sql_source_config_needs_exactly_one_of_table_and_query():
    from driftloop.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"sources.0.sql: Value error, give exactly one of `table` and `query`"):
        load_config(
            None,
            env={},
            check_files=False,
            overrides={"sources": [{"kind": "sql", "url": "sqlite://", "watermark": "id"}]},
        )
