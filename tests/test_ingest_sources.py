"""File sources beyond JSONL, mapping, rating scales, PII redaction and the bad-input corpus."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from driftloop.core.config import FieldMapping, FileSource, load_config
from driftloop.ingest import Redactor, RowError, RowParser, ingest_config, ingest_files
from driftloop.ingest.mapping import map_row

NOW = datetime(2026, 11, 20, tzinfo=UTC)
TS = "2026-11-01T10:00:00+00:00"
PII = ["alice.smith@example.com", "+44 20 7946 0958", "4111 1111 1111 1111", "203.0.113.77", "EMP-004211"]


def good(i: int, **kw) -> dict:
    return {"event_id": f"e{i}", "ts": TS, "prompt": f"question {i}", "response": "answer", "rating": 4, **kw}


def all_text(store) -> str:
    with store.engine.connect() as c:
        rows = c.execute(text("SELECT * FROM feedback")).all() + c.execute(text("SELECT * FROM quarantine")).all()
    return "\n".join(str(v) for r in rows for v in r)


def write_csv(path: Path, header: list[str], rows: list[list], gz: bool = False) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_csv_gzip_and_parquet_with_mapping_land_as_the_same_events(store, tmp_path):
    mapping = FieldMapping(
        fields={
            "prompt": "question",
            "response": "answer",
            "ts": "created_at",
            "rating": "score",
            "event_id": "id",
            "latency_ms": "ms",
        },
        segment_fields=["locale", "tier"],
        rating_scale="unit",
    )
    header = ["id", "created_at", "question", "answer", "score", "ms", "locale", "tier", "app"]
    rows = [
        [f"c{i}", TS, f"q{i}", "a", str(i / 4), str(10 * i), "de", "gold" if i % 2 else "", "web"] for i in range(5)
    ]
    write_csv(tmp_path / "a.csv.gz", header, rows, gz=True)
    table = pa.table({h: [r[j] for r in rows] for j, h in enumerate(header)})
    table = table.set_column(4, "score", pa.array([i / 4 for i in range(5)]))
    table = table.set_column(5, "ms", pa.array([10.0 * i for i in range(5)]))
    table = table.set_column(
        1, "created_at", pa.array([datetime(2026, 11, 1, 10, tzinfo=UTC)] * 5, pa.timestamp("us", tz="UTC"))
    )
    pq.write_table(table.set_column(0, "id", pa.array([f"p{i}" for i in range(5)])), tmp_path / "b.parquet")
    src = FileSource(path="*", mapping=mapping)
    r = ingest_files(store, [(tmp_path / "a.csv.gz", src), (tmp_path / "b.parquet", src)])
    assert (r.read, r.accepted, r.quarantined) == (10, 10, 0), r.reasons
    with store.engine.connect() as c:
        got = c.execute(
            text(
                "SELECT event_id, prompt, rating, rating_raw, latency_ms, segment, metadata "
                "FROM feedback ORDER BY event_id"
            )
        ).all()
    by_id = {g[0]: g for g in got}
    for prefix in "cp":
        e = by_id[f"{prefix}3"]
        assert (e[1], e[2], e[4]) == ("q3", 0.75, 30.0) and e[3] == "0.75"
        seg = e[5] if isinstance(e[5], dict) else json.loads(e[5])
        meta = e[6] if isinstance(e[6], dict) else json.loads(e[6])
        assert seg == {"locale": "de", "tier": "gold"} and meta == {"app": "web"}
    c0 = by_id["c0"][5]
    assert (json.loads(c0) if isinstance(c0, str) else c0) == {"locale": "de"}  # an empty cell is no segment
    again = ingest_files(store, [(tmp_path / "a.csv.gz", src), (tmp_path / "b.parquet", src)])
    assert (again.read, again.accepted) == (0, 0) and store.count_events() == 10


@pytest.mark.parametrize(
    "scale, raw, rating, thumbs, kept",
    [
        ("stars", 1, 0.0, None, "1"),
        ("stars", "5", 1.0, None, "5"),
        ("stars", 3.0, 0.5, None, "3"),
        ("thumbs", "up", 1.0, True, "up"),
        ("thumbs", "down", 0.0, False, "down"),
        ("thumbs", False, 0.0, False, "False"),
        ("thumbs", 1, 1.0, True, "1"),
        ("unit", 0.25, 0.25, None, "0.25"),
        ("unit", "1", 1.0, None, "1"),
        ("unit", 0, 0.0, None, "0"),
    ],
)
def test_ratings_are_normalised_from_their_scale_and_the_raw_value_kept(scale, raw, rating, thumbs, kept):
    e = RowParser(FieldMapping(rating_scale=scale)).event({"ts": TS, "prompt": "p", "rating": raw}, "x")
    assert (e.rating, e.thumbs_up, e.rating_raw) == (rating, thumbs, kept)


@pytest.mark.parametrize(
    "scale, raw, key",
    [
        ("stars", 6, "rating: not 1-5 stars"),
        ("stars", "4.5", "rating: not 1-5 stars"),
        ("thumbs", "sideways", "rating: not a thumbs value (up/down, true/false, 1/0)"),
        ("thumbs", 2, "rating: not a thumbs value (up/down, true/false, 1/0)"),
        ("unit", 1.01, "rating: not a number in [0, 1]"),
        ("unit", -0.1, "rating: not a number in [0, 1]"),
        ("unit", "high", "rating: not a number in [0, 1]"),
        ("unit", True, "rating: not a number in [0, 1]"),
    ],
)
def test_ratings_outside_their_scale_are_rejected_with_the_field(scale, raw, key):
    with pytest.raises(RowError) as err:
        RowParser(FieldMapping(rating_scale=scale)).event({"ts": TS, "prompt": "p", "rating": raw}, "x")
    assert err.value.key == key


@settings(max_examples=200, deadline=None)
@given(
    scale=st.sampled_from(["stars", "thumbs", "unit"]),
    raw=st.none() | st.booleans() | st.integers(-3, 8) | st.floats(allow_nan=True) | st.text(max_size=5),
)
def test_normaliser_maps_into_unit_interval_or_raises_row_error(scale, raw):
    try:
        e = RowParser(FieldMapping(rating_scale=scale)).event({"ts": TS, "prompt": "p", "rating": raw}, "x")
    except RowError as err:
        assert err.field == "rating"
    else:
        assert e.rating is None or (0.0 <= e.rating <= 1.0 and e.rating_raw is not None)


@settings(max_examples=150, deadline=None)
@given(
    row=st.dictionaries(
        st.sampled_from(["q", "when", "s", "loc", "x", "prompt"]),
        st.none() | st.text(max_size=8) | st.integers() | st.floats(),
        max_size=6,
    ),
    text_cells=st.booleans(),
)
def test_mapping_then_parsing_raises_nothing_but_row_error(row, text_cells):
    m = FieldMapping(fields={"prompt": "q", "ts": "when", "rating": "s"}, segment_fields=["loc"])
    try:
        RowParser(m, text_cells=text_cells, now=NOW).event(row, "x")
    except RowError as err:
        assert err.field and err.problem


def test_map_row_renames_collects_segments_and_types_text_cells():
    m = FieldMapping(fields={"prompt": "q", "tokens_in": "tin"}, segment_fields=["loc"])
    got = map_row({"q": "hi", "tin": "12", "loc": "fr", "latency_ms": "1.5", "other": ""}, m, text_cells=True)
    assert got == {"prompt": "hi", "tokens_in": 12, "latency_ms": 1.5, "other": None, "segment": {"loc": "fr"}}


@pytest.mark.parametrize(
    "text_in, out, kinds",
    [
        ("write to alice.smith@example.com please", "write to [EMAIL] please", {"email": 1}),
        ("call +44 20 7946 0958 or (415) 555-0100", "call [PHONE] or [PHONE]", {"phone": 2}),
        ("card 4111 1111 1111 1111 ok", "card [CARD] ok", {"card": 1}),
        ("from 203.0.113.77 and 2001:db8::8a2e:370:7334", "from [IP] and [IP]", {"ip": 2}),
        ("staff EMP-004211", "staff [EMP_ID]", {"emp_id": 1}),
        ("order 12345 on 2026-11-01 v2.3.1 at 10:30", "order 12345 on 2026-11-01 v2.3.1 at 10:30", {}),
    ],
)
def test_redactor_replaces_each_kind_and_counts_it(text_in, out, kinds):
    r = Redactor(patterns={"emp_id": r"EMP-\d{6}"})
    assert r.text(text_in) == out and dict(r.counts) == kinds


@settings(max_examples=100, deadline=None)
@given(
    before=st.text(st.characters(whitelist_categories=("Ll", "Zs")), max_size=20),
    after=st.text(st.characters(whitelist_categories=("Ll", "Zs")), max_size=20),
    user=st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,5})?", fullmatch=True),
    host=st.from_regex(r"[a-z]{2,8}\.(com|org|io|de)", fullmatch=True),
)
def test_no_email_survives_redaction_wherever_it_sits(before, after, user, host):
    email = f"{user}@{host}"
    assert email not in Redactor().text(f"{before} {email} {after}")


def test_pii_never_reaches_the_store_neither_in_events_nor_in_quarantine(store, tmp_path):
    pii = ", ".join(PII)
    rows = [
        good(
            1,
            prompt=f"I am {pii}",
            response=f"ok {PII[0]}",
            correction=f"c {PII[3]}",
            segment={"who": PII[0]},
            metadata={"ip": PII[3], "note": [PII[1]]},
            user_email=PII[0],
        ),
        good(2, prompt=f"bad row {pii}", rating=9),  # quarantined: whole raw row kept
        {"ts": f"{PII[0]}", "prompt": "p"},
    ]  # PII inside the reason's detail
    path = tmp_path / "f.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(
        None,
        env={},
        overrides={"sources": [{"path": str(path)}], "redaction": {"patterns": {"emp_id": r"EMP-\d{6}"}}},
        check_files=False,
    )
    r = ingest_config(cfg, store)
    assert (r.read, r.accepted, r.quarantined) == (3, 1, 2)
    assert r.redacted["email"] >= 5 and r.redacted["emp_id"] == 2 and r.redacted["card"] == 2
    dump = all_text(store)
    assert "[EMAIL]" in dump and "[EMP_ID]" in dump
    for p in PII + ["7946", "4111"]:
        assert p not in dump


def test_redaction_can_be_switched_off(sqlite_store, tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps(good(1, prompt=PII[0])) + "\n")
    cfg = load_config(
        None, env={}, overrides={"sources": [{"path": str(path)}], "redaction": {"enabled": False}}, check_files=False
    )
    r = ingest_config(cfg, sqlite_store)
    assert r.accepted == 1 and not r.redacted and PII[0] in all_text(sqlite_store)


def test_the_bad_input_corpus_is_quarantined_row_by_row_and_the_good_rows_kept(store, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    future = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    jsonl = [
        json.dumps(good(1)).encode(),
        b'{"ts": "2026-11-01T00:00:00Z", "prompt": "unterminated',  # malformed JSON
        json.dumps(good(2, prompt=["not", "a", "string"])).encode(),  # wrong type
        json.dumps(good(3, tokens_in="many")).encode(),  # wrong type
        json.dumps({"ts": TS, "response": "no prompt"}).encode(),  # missing required
        json.dumps({"prompt": "no ts"}).encode(),  # missing required
        json.dumps(good(4, ts="2026-11-01T10:00:00")).encode(),  # no timezone
        json.dumps(good(5, ts=future)).encode(),  # far future
        json.dumps(good(6, rating=0)).encode(),  # outside the scale
        json.dumps(good(7, prompt="x" * 1_048_576)).encode(),  # 1 MB of text
        b'{"ts": "2026-11-01T10:00:00Z", "prompt": "caf\xe9 \xff"}',  # invalid UTF-8
        json.dumps(good(8)).encode(),
    ]
    (corpus / "bad.jsonl").write_bytes(b"\n".join(jsonl) + b"\n")
    (corpus / "empty.jsonl").write_bytes(b"")
    (corpus / "empty.csv").write_bytes(b"")
    csv_text = (
        b"event_id,ts,prompt,rating\r\n"
        b"c1,2026-11-01T10:00:00Z,fine,5\r\n"
        b"c2,2026-11-01T10:00:00Z,ragged,5,extra\r\n"  # ragged row
        b"c3,2026-11-01T10:00:00Z\r\n"  # ragged row (short)
        b"c4,2026-11-01T10:00:00Z,bad \xff bytes,5\r\n"  # invalid UTF-8
        b'c5,2026-11-01T10:00:00Z,"multi\r\nline",7\r\n'  # outside the scale
        b'c6,2026-11-01T10:00:00Z,"multi\r\nline, fine",2\r\n'
    )
    (corpus / "bad.csv").write_bytes(csv_text)
    files = sorted(corpus.iterdir())
    r = ingest_files(store, files)
    assert r.balanced and (r.read, r.accepted, r.quarantined) == (18, 4, 14), r.reasons
    assert r.reasons == {
        "(line): malformed JSON": 1,
        "prompt: not a string": 1,
        "tokens_in: not an integer": 1,
        "prompt: missing": 1,
        "ts: missing": 1,
        "ts: no timezone": 1,
        "ts: more than 1 day in the future": 1,
        "rating: not 1-5 stars": 2,
        "prompt: longer than 262144 characters": 1,
        "(line): invalid UTF-8": 1,
        "(row): ragged CSV row": 2,
        "(row): invalid UTF-8": 1,
    }
    with store.engine.connect() as c:
        ids = {x for (x,) in c.execute(text("SELECT event_id FROM feedback"))}
        q = c.execute(text("SELECT source, field, reason, raw FROM quarantine ORDER BY id")).all()
    assert ids == {"e1", "e8", "c1", "c6"} and len(q) == 14
    ragged = [row for row in q if row[2].startswith("ragged CSV row")]
    assert [row[2] for row in ragged] == [
        "ragged CSV row (5 fields, header has 4)",
        "ragged CSV row (2 fields, header has 4)",
    ]
    assert ragged[0][3] == "c2,2026-11-01T10:00:00Z,ragged,5,extra\r\n" and ragged[0][0].endswith("bad.csv")
    long_raw = next(row[3] for row in q if row[2].startswith("longer than"))
    assert len(long_raw) == 64 * 1024  # the raw payload is kept, cut to 64 KiB
    assert ingest_files(store, files).read == 0  # nothing is read twice


def test_content_ids_are_scoped_to_the_named_source(store, tmp_path):
    from fastapi.testclient import TestClient

    from driftloop.app.api import create_app

    rows = [{k: v for k, v in good(i).items() if k != "event_id"} for i in range(6)]  # no ids: content ids
    for d in ("a", "b", "c"):
        (tmp_path / d).mkdir()
    write = lambda p, rs: p.write_text("".join(json.dumps(r) + "\n" for r in rs))  # noqa: E731
    write(tmp_path / "a" / "day1.jsonl", rows[:4])
    write(tmp_path / "a" / "day2.jsonl", rows[2:])  # overlapping exports of one source
    write(tmp_path / "b" / "all.jsonl", rows)  # another source with the same content
    write(tmp_path / "c" / "all.jsonl", rows)  # a third that shares the API's namespace
    cfg = load_config(
        None,
        env={},
        check_files=False,
        overrides={
            "api": {"token": "t0ken-for-the-tests", "id_namespace": "app"},
            "sources": [{"path": str(tmp_path / "a" / "*.jsonl")}, {"path": str(tmp_path / "b" / "*.jsonl")}],
        },
    )
    r = ingest_config(cfg, store)
    assert (r.read, r.accepted, r.duplicates) == (14, 12, 2)  # each source stores each event once
    with TestClient(create_app(cfg, store=store)) as client:
        got = client.post("/v1/feedback", json=rows, headers={"Authorization": "Bearer t0ken-for-the-tests"}).json()
        assert (got["accepted"], got["duplicates"]) == (6, 0)
        cfg_c = cfg.model_copy(
            update={"sources": [FileSource(path=str(tmp_path / "c" / "*.jsonl"), id_namespace="app")]}
        )
        r = ingest_config(cfg_c, store)
        assert (r.read, r.accepted, r.duplicates) == (6, 0, 6)  # the API's events, under the same namespace
        again = client.post(
            "/v1/feedback", json=rows[:2], headers={"Authorization": "Bearer t0ken-for-the-tests"}
        ).json()
        assert (again["accepted"], again["duplicates"]) == (0, 2)
    assert store.count_events() == 18
