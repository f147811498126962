"""COPY text of the store's PostgreSQL bulk path: PostgreSQL reads back exactly what psycopg's own COPY writes.

`copytext.cell` and the arrow formatting of `copy_block` are checked against
`psycopg`'s `write_row` on a real server, value by value; the in-block
de-duplication and the byte scan that replaces the PII screen's regex are
checked against plain Python. The end-to-end comparison with the row path
is in tests/test_ingest_fast.py and tests/test_ingest_worker.py.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from driftloop.ingest.columnar import block_parts, screen_hits
from driftloop.ingest.lines import Block
from driftloop.ingest.pipeline import RowParser
from driftloop.ingest.redact import might_match
from driftloop.store import Batch, Checkpoint, Store
from driftloop.store.batch import EVENT_COLUMNS
from driftloop.store.copytext import _arrow_lines, _first_of_each, cell, copy_block, line
from driftloop.store.encode import encode
from driftloop.store.engine import driver_value
from driftloop.store.models import utcnow

TRICKY = [
    "",
    "plain",
    "back\\slash",
    "tab\there",
    "line\nfeed",
    "cr\rhere",
    "\\N",
    "\\t literal",
    "\x1c\x1d\x0b\x0c\x08",
    "caf\u00e9 \U0001f600",
    "end\\",
    "\t\n\r\\",
]
FLOATS = [0.0, -0.0, 0.25, 1e308, 5e-324, 1e16, 1e-7, 123456789012345678.0, 148.4, 2.0**53 + 2]


@pytest.mark.postgres
def test_python_and_arrow_copy_text_read_back_as_psycopg_writes_them(pg_port):
    import psycopg
    from conftest import new_pg_database

    store = Store(new_pg_database(pg_port))
    dsn = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    when = datetime(2026, 11, 1, 10, 0, 0, 123456, tzinfo=UTC)
    rows = [
        (s, f, b, i, when + timedelta(seconds=k))
        for k, (s, f, b, i) in enumerate(
            zip(TRICKY * 2, FLOATS + FLOATS[:2] + [None] * 12, [True, False, None] * 8, [0, -1, 2**31 - 1, None] * 6)
        )
    ]
    cols = [
        pa.array([r[0] for r in rows], pa.string()),
        pa.array([r[1] for r in rows], pa.float64()),
        pa.array([r[2] for r in rows], pa.bool_()),
        pa.array([r[3] for r in rows], pa.int64()),
        pa.array([cell(r[4]) for r in rows], pa.string()),
    ]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in ("ref", "py", "arrow"):
            conn.execute(f"CREATE TABLE {name} (s text, f float8, b boolean, i integer, t timestamptz, c text, d text)")
        with conn.cursor().copy("COPY ref FROM STDIN") as copy:
            for r in rows:
                copy.write_row((*r, "{}", "src\tx"))
        with conn.cursor().copy("COPY py FROM STDIN") as copy:
            copy.write("".join(line((*r, "{}", "src\tx")) for r in rows).encode())
        with conn.cursor().copy("COPY arrow FROM STDIN") as copy:
            copy.write(_arrow_lines(cols, [pa.scalar("{}"), pa.scalar(cell("src\tx") + "\n")], plain=False))
        got = {
            n: conn.execute(f"SELECT s, f, b, i, t, c, d, CAST(f AS text) FROM {n} ORDER BY t").fetchall()
            for n in ("ref", "py", "arrow")
        }
    assert len(got["ref"]) == len(rows)
    assert got["py"] == got["ref"]
    assert got["arrow"] == got["ref"]
    negzero = [r for r in got["ref"] if r[1] == 0 and math.copysign(1, r[1]) < 0]
    assert negzero and all(
        r[7] == "-0" for r in negzero
    )  # the sign survives: the text form shows it  # -0.0 keeps its sign on every path
    store.close()


def test_cell_writes_the_types_the_store_rows_hold():
    when = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    assert [cell(v) for v in (None, True, False, 3, 0.1, "a\tb\\c\nd\re", when)] == [
        "\\N",
        "true",
        "false",
        "3",
        "0.1",
        "a\\tb\\\\c\\nd\\re",
        "2026-11-01 10:00:00+00:00",
    ]
    assert line(("a", None)) == "a\t\\N\n"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from(["a", "b", "c", "d", "e"])), unique_by=lambda x: x[0]))
def test_first_of_each_keeps_the_lowest_line_of_every_id(pairs):
    lines = np.asarray([p[0] for p in pairs], dtype=np.int64)
    ids = [p[1] for p in pairs]
    keep = _first_of_each(lines, ids)
    lowest = {e: min(i for i, x in pairs if x == e) for e in set(ids)}
    assert keep.tolist() == [lowest[e] == i for i, e in pairs]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.text(alphabet=st.sampled_from(list("ab @:09/;xyz")), max_size=8))),
    st.integers(0, 3),
)
def test_the_byte_scan_finds_what_the_screen_finds(values, offset):
    a = pa.array(["pad"] * offset + values, pa.string()).slice(offset)  # a sliced array: offsets start later
    assert screen_hits(a).tolist() == [v is not None and might_match(v) for v in values]


def _block(objs: list[dict], source: str = "src") -> tuple:
    parser = RowParser()
    lines = [json.dumps(o).encode() if isinstance(o, dict) else o for o in objs]
    reasons: Counter[str] = Counter()
    return block_parts(Block(lines, {}, 0), parser, source, reasons)


GOOD = {
    "event_id": "g1",
    "ts": "2026-11-01T10:00:00+00:00",
    "model_version": "3",
    "prompt": "where is my refund",
    "response": "soon",
    "rating": 4,
    "thumbs_up": True,
    "segment": {"topic": "billing"},
    "latency_ms": 120.5,
    "tokens_in": 12,
    "tokens_out": 30,
}


def test_copy_block_keeps_the_first_of_each_id_across_tables_fixed_and_row_path_rows():
    objs = [
        GOOD,
        {**GOOD, "event_id": "g2", "prompt": "mail bob@example.com"},  # redacted: built by Python
        b'{"ts": "2026-11-01T00:00:00Z", "prompt": }',  # looks like an object, is not: splits the arrow tables
        {**GOOD, "prompt": "same id, later line"},
        {**GOOD, "event_id": "g3", "prompt": "caf\u00e9"},  # non-ASCII: the row path
        {**GOOD, "event_id": "g2", "prompt": "later g2"},
        {**GOOD, "event_id": "g3", "prompt": "later g3"},
        {**GOOD, "event_id": None},  # content id
        {**GOOD, "event_id": None},  # the same content: the same id
    ]
    parts, quarantine = _block(objs)
    assert len(quarantine) == 1 and parts.events and len(parts.tables) >= 2
    block = copy_block(parts, "src", driver_value("postgresql", utcnow()))
    assert (block.rows, block.total) == (4, 8)
    stored = [r.split("\t") for r in block.payload.decode().splitlines()]
    assert all(len(r) == len(EVENT_COLUMNS) for r in stored) and len(stored) == 4
    prompts = {r[0]: r[3] for r in stored}
    content_id = (set(prompts) - {"g1", "g2", "g3"}).pop()
    assert prompts == {
        "g1": "where is my refund",
        "g2": "mail [EMAIL]",
        "g3": "caf\u00e9",
        content_id: "where is my refund",
    }


@pytest.mark.postgres
def test_copy_falls_back_when_another_writer_stores_an_id_first(pg_port):
    from conftest import new_pg_database
    from test_ingest_fast import while_another_writer_holds_x1

    store = Store(new_pg_database(pg_port))
    store.migrate()
    parts, _ = _block([{**GOOD, "event_id": "x1"}, {**GOOD, "event_id": "x2", "prompt": "p"}])
    # x2 stored, x1 counted as a duplicate: the other writer's row stays.
    batch = Batch("src", parts, (), Checkpoint("k", "1"))
    assert while_another_writer_holds_x1(store, lambda: store.write_batch(batch)) == (1, 1)
    again = Batch("src", parts, [{"source": "s", "raw": "r", "field": "f", "reason": "why"}], Checkpoint("k", "2"))
    assert store.write_batch(again) == (0, 2)
    with store.engine.connect() as c:
        assert c.execute(text("SELECT event_id, prompt FROM feedback ORDER BY 1")).all() == [("x1", "o"), ("x2", "p")]
        assert c.execute(text("SELECT position FROM ingest_checkpoint WHERE source_key = 'k'")).scalar() == "2"
        assert c.execute(text("SELECT reason FROM quarantine")).scalar() == "why"
    store.close()


def test_copy_text_is_refused_by_a_sqlite_store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    parts, _ = _block([GOOD])
    copy_text = encode(parts, "postgresql", "src", driver_value("postgresql", utcnow()))
    with pytest.raises(ValueError, match="postgresql"):
        store.write_batch(Batch("src", copy_text))
    assert store.count_events() == 0
