"""The columnar fast path stores exactly what the row path stores: same rows, ids, quarantine, counts.

Every test ingests the same files twice, once with the fast path (pyarrow)
and once with the row path forced, into two stores on the same backend, and
compares the tables byte for byte (`ingested_at` and `created_at` aside).
"""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from driftloop.ingest import columnar, ingest_files
from driftloop.ingest.redact import Redactor
from driftloop.store import Store

TS = "2026-11-01T10:00:00+00:00"
GOOD = {
    "event_id": "g1",
    "ts": TS,
    "model_version": "3",
    "prompt": "where is my refund",
    "response": "soon",
    "rating": 4,
    "thumbs_up": True,
    "segment": {"topic": "billing", "locale": "en"},
    "latency_ms": 120.5,
    "tokens_in": 12,
    "tokens_out": 30,
}


@pytest.fixture
def pair(store_url: str, tmp_path: Path, request: pytest.FixtureRequest):
    """Two migrated stores on the same backend: (fast path, row path)."""
    if store_url.startswith("sqlite"):
        urls = [f"sqlite:///{tmp_path / 'fast.db'}", f"sqlite:///{tmp_path / 'row.db'}"]
    else:
        from conftest import new_pg_database

        urls = [store_url, new_pg_database(request.getfixturevalue("pg_port"))]
    stores = [Store(u) for u in urls]
    for s in stores:
        s.migrate()
    yield stores
    for s in stores:
        s.close()


def ingest(store: Store, files: list[Path], fast: bool, **kw):
    """`ingest_files` with the fast path allowed, or with every row forced through the row path."""
    if fast:
        return ingest_files(store, files, **kw)
    with mock.patch.object(columnar, "fast_path_ok", lambda *a: False):
        return ingest_files(store, files, **kw)


def tables(store: Store) -> dict[str, list[tuple]]:
    """Everything ingestion writes, as the database holds it (JSON columns as their text)."""
    with store.engine.connect() as c:
        return {
            "feedback": c.execute(
                text(
                    "SELECT event_id, ts, model_version, prompt, response, rating, rating_raw, thumbs_up, correction, "
                    "CAST(segment AS TEXT), latency_ms, tokens_in, tokens_out, CAST(metadata AS TEXT), source "
                    "FROM feedback ORDER BY event_id"
                )
            ).all(),
            "quarantine": c.execute(
                text("SELECT source, raw, field, reason, line, row_key FROM quarantine ORDER BY id")
            ).all(),
            "checkpoint": c.execute(text("SELECT source_key, position FROM ingest_checkpoint ORDER BY 1")).all(),
        }


def counts(r) -> tuple:
    return (r.read, r.accepted, r.duplicates, r.quarantined, dict(r.reasons), dict(r.redacted))


def same_both_ways(pair: list[Store], files: list[Path], **kw) -> tuple:
    """Ingest `files` both ways; assert identical reports and tables; return the fast report's counts."""
    fast, row = ingest(pair[0], files, True, **kw), ingest(pair[1], files, False, **kw)
    assert counts(fast) == counts(row)
    a, b = tables(pair[0]), tables(pair[1])
    for name in a:
        assert a[name] == b[name], name
    return counts(fast)


def line(obj) -> bytes:
    return json.dumps(obj).encode()


# Rows the two paths must agree on: valid ones in many shapes, and every kind of fault.
EDGE: list[bytes] = [
    line(GOOD),
    line({**GOOD, "event_id": None}),  # no id: content hash
    line({k: v for k, v in GOOD.items() if k != "event_id"}),
    line({**GOOD, "event_id": "g2", "prompt": "mail me at bob@example.com", "response": "call +1 415 555 0100"}),
    line(
        {
            **GOOD,
            "event_id": None,
            "correction": "card 4111 1111 1111 1111, ip 10.0.0.1",
            "segment": {"topic": "bob@example.com", "locale": "en"},
        }
    ),
    line({**GOOD, "event_id": "g3", "prompt": "order 12345 on 2026-11-01 at 10:30"}),  # digits, no PII
    line({**GOOD, "event_id": "g4", "segment": {"locale": "de", "topic": "billing"}}),  # other key order
    line({**GOOD, "event_id": "g5", "segment": {"topic": "a", "locale": "b", "tier": "c"}}),
    line({**GOOD, "event_id": "g6", "segment": {"tier": "c", "topic": "a", "locale": "b"}}),
    line({**GOOD, "event_id": "g7", "segment": {}}),
    line({**GOOD, "event_id": "g8", "segment": None}),
    line({**GOOD, "event_id": "g9", "segment": {"topic": 'line\nbreak "quoted"', "locale": "caf\u00e9"}}),
    line({**GOOD, "event_id": "g10", "segment": {"topic": 3}}),
    line({**GOOD, "event_id": "g11", "segment": {"topic": None, "locale": "en"}}),
    line({**GOOD, "event_id": "g12", "segment": ["x"]}),
    line({**GOOD, "event_id": "g13", "metadata": {"a": 1, "b": [1, 2]}}),
    line({**GOOD, "event_id": "g14", "extra": None}),  # unknown key: metadata
    line({**GOOD, "event_id": "g15", "metadata": None}),
    *[
        line({**GOOD, "event_id": f"ts{i}", "ts": ts})
        for i, ts in enumerate(
            [
                "2026-11-01T10:00:00Z",
                "2026-11-01T10:00:00.1+05:30",
                "2026-11-01 10:00:00.123-08:00",
                "2026-11-01T10:00:00.123456Z",
                "2026-11-01T10:00:00.1234567Z",
                "2026-11-01T10:00:00",
                "2099-01-01T00:00:00Z",
                "1969-12-31T23:59:59Z",
                "2026-02-30T00:00:00Z",
                "2026-11-01T24:00:00Z",
                "2026-11-01T10:00:00+24:00",
                " 2026-11-01T10:00:00Z",
                "2026-11-01t10:00:00Z",
                "20261101T100000Z",
                "2026-11-01T10:00Z",
                "x",
                5,
                None,
            ]
        )
    ],
    *[
        line({**GOOD, "event_id": f"r{i}", "rating": r})
        for i, r in enumerate([1, 5, 0, 6, 4.0, 4.5, "4", "4.0", True, None, 10**20, -1])
    ],
    *[
        line({**GOOD, "event_id": f"t{i}", "tokens_in": v})
        for i, v in enumerate([5.0, 5.5, -1, 2**31, 2**31 - 1, "5", 10**20, None, True, -0.0])
    ],
    *[
        line({**GOOD, "event_id": f"l{i}", "latency_ms": v})
        for i, v in enumerate([7, 0, -0.0, -1.5, 1e308, "fast", True, None, 10**20])
    ],
    *[line({**GOOD, "event_id": f"u{i}", "thumbs_up": v}) for i, v in enumerate(["yes", 1, None, False])],
    *[line({**GOOD, "event_id": f"m{i}", "model_version": v}) for i, v in enumerate([3, 3.5, "v" * 129, None, ""])],
    *[line({**GOOD, "event_id": e}) for e in ["", "   ", "x" * 65, 42, "\u0000x", "caf\u00e9", "\x1c"]],
    *[
        line({**GOOD, "event_id": f"p{i}", "prompt": p})
        for i, p in enumerate(
            [
                "",
                "   ",
                "\x1c\x1d",
                None,
                5,
                "tab\there",
                "caf\u00e9",
                "\ud83d\ude00 ok",
                "nul \u0000",
                "x" * 262_145,
                "x" * 262_144,
            ]
        )
    ],
    *[line({**GOOD, "event_id": f"c{i}", "correction": c}) for i, c in enumerate(["", "fix it", None, 7])],
    line({**GOOD, "event_id": "d1", "response": None}),
    b'{"event_id": "dupkey", "ts": "2026-11-01T10:00:00Z", "prompt": "a", "prompt": "b"}',
    b'{"event_id": "lone", "ts": "2026-11-01T10:00:00Z", "prompt": "\\ud800"}',
    b'{"event_id": "raw", "ts": "2026-11-01T10:00:00Z", "prompt": "caf\xc3\xa9 raw utf-8"}',
    b'{"event_id": "bad", "ts": "2026-11-01T10:00:00Z", "prompt": "caf\xe9"}',
    b'{"ts": "2026-11-01T00:00:00Z", "prompt": ',
    b'{"event_id": "nan", "ts": "2026-11-01T10:00:00Z", "prompt": "a", "latency_ms": NaN}',
    b'{"event_id": "inf", "ts": "2026-11-01T10:00:00Z", "prompt": "a", "latency_ms": 1E400}',
    b'{"event_id": "two", "ts": "2026-11-01T10:00:00Z", "prompt": "a"} {"event_id": "three"}',
    b'{"event_id": "tail", "ts": "2026-11-01T10:00:00Z", "prompt": "a"} x',
    b'{"event_id": "trail", "ts": "2026-11-01T10:00:00Z", "prompt": "a",}',
    b"\xef\xbb\xbf" + line({**GOOD, "event_id": "bom-mid"}),
    b"[1, 2]",
    b"42",
    b"null",
    b"{}",
    b"   ",
    b"",
    b'{"event_id":"compact","ts":"2026-11-01T10:00:00Z","prompt":"a","segment":{"topic":"x","locale":"y"}}',
    line(GOOD),  # a duplicate of the first row
    line({**GOOD, "prompt": "same id, other text"}),  # same id, other content: the first one wins
]


@pytest.mark.parametrize("batch_lines", [7, 2000])
def test_edge_rows_are_stored_identically_by_both_paths(pair, tmp_path, batch_lines):
    path = tmp_path / "edge.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(EDGE[:5]) + b"\r\n" + b"\n".join(EDGE[5:]) + b"\n")
    read, accepted, dups, quarantined, reasons, redacted = same_both_ways(pair, [path], batch_lines=batch_lines)
    assert read == len([x for x in EDGE if x.strip()]) and accepted >= 50 and quarantined >= 40 and dups >= 2
    assert redacted["email"] >= 2 and redacted["card"] == 1 and redacted["ip"] == 1 and redacted["phone"] == 1
    assert same_both_ways(pair, [path], batch_lines=batch_lines)[0] == 0  # rerun: nothing new to read


def test_the_fast_path_takes_the_plain_rows(sqlite_store, tmp_path, monkeypatch):
    rows = [
        {**GOOD, "event_id": f"e{i}", "prompt": f"question number {i}" if i % 10 else "mail a@b.io"} for i in range(500)
    ]
    path = tmp_path / "plain.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    taken: list[int] = []
    real = columnar._fast_rows

    def spy(*a, **kw):
        idx, out = real(*a, **kw)
        taken.append(len(out))
        return idx, out

    monkeypatch.setattr(columnar, "_fast_rows", spy)
    r = ingest_files(sqlite_store, [path], batch_lines=100)
    assert (r.read, r.accepted) == (500, 500) and sum(taken) == 500 and r.redacted == {"email": 50}


def test_bad_input_corpus_and_a_corrupt_gzip_match_the_row_path(pair, tmp_path):
    import gzip

    good = [line({**GOOD, "event_id": f"z{i}", "prompt": f"p {i}"}) for i in range(3000)]
    data = gzip.compress(b"\n".join(good) + b"\n")
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) // 2])
    r = same_both_ways(pair, [cut], batch_lines=100)
    assert 0 < r[1] < 3000


def test_redaction_off_and_user_patterns_match_the_row_path(pair, tmp_path):
    path = tmp_path / "pii.jsonl"
    path.write_bytes(b"\n".join(EDGE[:12]) + b"\n" + line({**GOOD, "event_id": "emp", "prompt": "id EMP-123456"}))
    for redactor in (Redactor(enabled=False), Redactor(patterns={"employee": r"EMP-\d{6}"}), Redactor(builtin=[])):
        fast = ingest(pair[0], [path], True, redactor=redactor, batch_lines=5)
        row = ingest(pair[1], [path], False, redactor=redactor, batch_lines=5)
        assert counts(fast) == counts(row)
        assert tables(pair[0]) == tables(pair[1])
        for s in pair:  # next redactor: from the start again
            with s._writer.begin() as c:
                for t in ("feedback", "quarantine", "ingest_checkpoint"):
                    c.execute(text(f"DELETE FROM {t}"))


# --------------------------------------------------------------- hypothesis
texts = st.one_of(
    st.sampled_from(["plain words", "", "  ", "mail x@y.io", "call 020 7946 0958", "v1.2:3", 'a"b\\c', "\n"]),
    st.text(alphabet=st.sampled_from(list('ab @:.-+19é\u0000\x1c"\\\n\t\U0001f600\ud800')), max_size=12),
)
values = st.one_of(st.none(), st.booleans(), st.integers(-2, 7), st.sampled_from([4.0, 0.5, -0.0, 2**31, 1e20]), texts)
stamps = st.sampled_from(
    [
        "2026-11-01T10:00:00Z",
        "2026-11-01T10:00:00.5+02:00",
        "2026-11-01T10:00:00",
        "2099-01-01T00:00:00Z",
        "2026-11-01 10:00:00-01:00",
        "bad",
    ]
)
FIELDS = [
    "event_id",
    "ts",
    "model_version",
    "prompt",
    "response",
    "rating",
    "thumbs_up",
    "correction",
    "segment",
    "latency_ms",
    "tokens_in",
    "tokens_out",
    "metadata",
    "other",
]


@st.composite
def rows(draw) -> bytes:
    if draw(st.integers(0, 30)) == 0:
        return draw(st.sampled_from([b'{"ts": "2026-11-01T00:00:00Z", "prompt": ', b"[1]", b"   ", b"{}"]))
    row = {"ts": draw(stamps), "prompt": draw(texts)}
    for k in draw(st.lists(st.sampled_from(FIELDS), max_size=6, unique=True)):
        if k == "segment":
            row[k] = draw(
                st.one_of(
                    st.none(),
                    st.dictionaries(
                        st.sampled_from(["topic", "locale", "tier"]), st.one_of(texts, st.none()), max_size=3
                    ),
                )
            )
        elif k == "metadata":
            row[k] = draw(st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "b"]), values, max_size=2)))
        elif k == "ts":
            continue
        else:
            row[k] = draw(values)
    if draw(st.booleans()):
        row = dict(draw(st.permutations(list(row.items()))))
    return json.dumps(row, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(rows(), min_size=1, max_size=25), batch=st.integers(1, 30))
def test_generated_rows_are_stored_identically_by_both_paths(pair, tmp_path, lines, batch):
    # Both stores see the same files in the same order, so they stay equal across examples.
    path = tmp_path / f"gen-{len(list(tmp_path.iterdir()))}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    same_both_ways(pair, [path], batch_lines=batch)


def while_another_writer_holds_x1(store: Store, write):
    """`write()`'s result when another connection has inserted id x1 uncommitted and commits a second later.

    The writer's COPY waits on the other transaction, then fails on x1 and takes the
    staging path: the other writer's row stays and x1 counts as a duplicate.
    """
    import threading
    import time

    import psycopg

    dsn = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as other:
        other.execute(
            "INSERT INTO feedback (event_id, ts, model_version, prompt, response, segment, metadata, source, "
            "ingested_at) VALUES ('x1', now(), '', 'o', '', '{}', '{}', 'o', now())"
        )
        result: list = []
        worker = threading.Thread(target=lambda: result.append(write()))
        worker.start()
        time.sleep(1.0)
        other.commit()
        worker.join(30)
    assert len(result) == 1, "the write did not finish"
    return result[0]


@pytest.mark.postgres
def test_postgres_copy_falls_back_when_another_writer_stores_an_id_first(pg_url):
    from driftloop.core.types import FeedbackEvent
    from driftloop.store import Batch, Checkpoint
    from driftloop.store.models import utcnow

    store = Store(pg_url)
    store.migrate()
    now = utcnow()
    events = [FeedbackEvent(event_id=i, ts=now, prompt="p") for i in ("x1", "x2")]
    batch = Batch("s", events, (), Checkpoint("k", "1"))
    assert while_another_writer_holds_x1(store, lambda: store.write_batch(batch)) == (1, 1)
    with store.engine.connect() as c:
        assert c.execute(text("SELECT event_id, prompt FROM feedback ORDER BY 1")).all() == [("x1", "o"), ("x2", "p")]
        assert c.execute(text("SELECT position FROM ingest_checkpoint WHERE source_key = 'k'")).scalar() == "1"
    store.close()


@pytest.mark.parametrize("tail", [b"\n", b"", b"\r\n\n  \n"])
def test_lines_across_read_chunks_and_over_long_lines_match_the_row_path(sqlite_store, tmp_path, monkeypatch, tail):
    from driftloop.ingest import files, lines

    monkeypatch.setattr(lines, "READ_BYTES", 64)  # every line spans several reads
    monkeypatch.setattr(files, "MAX_LINE_BYTES", 300)
    body = [line({**GOOD, "event_id": f"s{i}", "prompt": "w" * (i * 37 % 400 + 1)}) for i in range(40)]
    path = tmp_path / "chunks.jsonl"
    path.write_bytes(b"\n".join(body[:20]) + b"\n\n   \r\n" + b"\r\n".join(body[20:]) + tail)
    row_store = Store(f"sqlite:///{tmp_path / 'row.db'}")
    row_store.migrate()
    read, accepted, _, quarantined, reasons, _ = same_both_ways([sqlite_store, row_store], [path], batch_lines=3)
    assert read == 40 and quarantined == reasons["(line): too long"] > 5 and accepted == 40 - quarantined
    row_store.close()


def test_without_pyarrow_or_with_a_mapping_it_does_not_cover_the_row_path_stores_the_same(
    sqlite_store, tmp_path, monkeypatch
):
    from driftloop.core.config import FieldMapping, FileSource

    path = tmp_path / "plain.jsonl"
    path.write_bytes(b"\n".join(EDGE[:12]) + b"\n")
    calls: list[int] = []
    real = columnar._fast_rows
    monkeypatch.setattr(columnar, "_fast_rows", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    monkeypatch.setattr(columnar, "available", lambda: False)  # as if pyarrow were not installed
    first = ingest_files(sqlite_store, [path])
    assert calls == [] and (first.read, first.accepted, first.duplicates) == (12, 11, 1)
    monkeypatch.setattr(columnar, "available", lambda: True)
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(path.read_bytes())
    # The namespace of bare paths: the same source, so the same content ids.
    monkeypatch.setattr(columnar.shapes, "mapping_ok", lambda m: False)  # e.g. the unit scale
    mapped = FileSource(path=str(copy), mapping=FieldMapping(fields={"prompt": "prompt"}), id_namespace="files")
    again = ingest_files(sqlite_store, [(copy, mapped)])  # a mapping it does not cover: the row path
    assert calls == [] and (again.read, again.duplicates) == (12, 12) and sqlite_store.count_events() == 11
    assert ingest_files(sqlite_store, [tmp_path / "copy.jsonl"]).read == 0 and calls == []  # checkpointed


def test_arrow_allocates_with_malloc_during_ingestion_and_gets_its_pool_back(sqlite_store, tmp_path, monkeypatch):
    import pyarrow as pa

    before = pa.default_memory_pool().backend_name
    seen: list[str] = []
    real = columnar.block_parts
    monkeypatch.setattr(
        columnar, "block_parts", lambda *a, **kw: seen.append(pa.default_memory_pool().backend_name) or real(*a, **kw)
    )
    path = tmp_path / "plain.jsonl"
    path.write_bytes(b"\n".join(EDGE[:12]) + b"\n")
    assert ingest_files(sqlite_store, [path]).accepted == 11
    assert seen and set(seen) == {"system"} and pa.default_memory_pool().backend_name == before
