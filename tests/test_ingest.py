"""File ingestion: the demo world's feedback in, bad lines quarantined, reruns resume and add nothing."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from driftloop.core.errors import InputError
from driftloop.core.types import FeedbackEvent
from driftloop.demo.world import simulate
from driftloop.ingest import RowError, decode_line, ingest_files, parse_row
from driftloop.ingest import files as ingest
from driftloop.ingest.values import SEGMENT_KEY

NOW = datetime(2026, 11, 20, tzinfo=UTC)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def identity_holds(r) -> bool:
    return r.read == r.accepted + r.duplicates + r.quarantined


@pytest.fixture(scope="module")
def world() -> list[dict]:
    return simulate(seed=0)


def test_world_feedback_is_ingested_once_from_jsonl_and_gz(store, tmp_path, world):
    plain = write_jsonl(tmp_path / "feedback.jsonl", world)
    gz = tmp_path / "copy.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    seen = []
    r = ingest_files(store, [plain], progress=lambda done, total: seen.append((done, total)))
    assert (r.read, r.accepted, r.duplicates, r.quarantined) == (len(world), len(world), 0, 0)
    assert store.count_events() == len(world) and seen[-1] == (plain.stat().st_size,) * 2
    # Rerun: resumes at the end of the file; the gzip copy holds the same events.
    again = ingest_files(store, [plain, gz])
    assert (again.read, again.accepted, again.duplicates, again.quarantined) == (len(world), 0, len(world), 0)
    assert again.per_file[str(plain.resolve())].read == 0 and identity_holds(again)
    assert ingest_files(store, [plain, gz]).read == 0
    assert store.count_events() == len(world)
    lo, hi = store.time_bounds()
    df = store.read_window(lo, hi + timedelta(seconds=1), ["topic", "locale"])
    assert len(df) == len(world)
    assert (df["rating"] == 1.0).sum() == sum(e["rating"] == 5 for e in world)  # 5 stars -> 1.0
    assert set(df["topic"]) == {"account", "shipping", "returns", "billing"}
    assert df["has_correction"].sum() == sum(e["correction"] is not None for e in world)


def test_gz_file_alone_is_read_in_full(sqlite_store, tmp_path, world):
    gz = tmp_path / "feedback.jsonl.gz"
    gz.write_bytes(gzip.compress("".join(json.dumps(e) + "\n" for e in world[:500]).encode()))
    r = ingest_files(sqlite_store, [gz], batch_lines=200)
    assert (r.read, r.accepted) == (500, 500) and not r.errors


def test_bad_lines_are_quarantined_with_reasons_and_good_ones_kept(store, tmp_path, world):
    good = world[:2]
    lines = [
        json.dumps(good[0]).encode(),
        b'{"ts": "2026-11-01T00:00:00+00:00", "prompt": ',  # truncated JSON
        json.dumps({**good[0], "ts": "2026-11-01T10:00:00"}).encode(),  # naive
        json.dumps({**good[0], "rating": 9}).encode(),
        b'{"ts": "2026-11-01T00:00:00+00:00", "prompt": "caf\xe9"}',  # Latin-1, not UTF-8
        json.dumps({k: v for k, v in good[0].items() if k != "prompt"}).encode(),
        json.dumps({**good[0], "prompt": "a\u0000b"}).encode(),
        b"[1, 2]",
        json.dumps({**good[0], "latency_ms": 1.5}).replace("1.5", "NaN").encode(),  # not JSON
        b"   ",  # blank: not a row
        json.dumps(good[1]).encode(),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    r = ingest_files(store, [path])
    assert (r.read, r.accepted, r.duplicates, r.quarantined) == (10, 2, 0, 8)
    assert r.reasons == {
        "(line): malformed JSON": 2,
        "ts: no timezone": 1,
        "rating: not 1-5 stars": 1,
        "(line): invalid UTF-8": 1,
        "prompt: missing": 1,
        "prompt: contains a NUL character": 1,
        "(row): not a JSON object": 1,
    }
    assert store.count_quarantine() == 8 and store.count_events() == 2
    assert r.summary().startswith("read 10, accepted 2, duplicates 0, quarantined 8 ((line): malformed JSON x2")
    with store.engine.connect() as c:
        rows = c.execute(text("SELECT field, reason, raw FROM quarantine ORDER BY id")).all()
    assert [f for f, _, _ in rows] == ["(line)", "ts", "rating", "(line)", "prompt", "prompt", "(row)", "(line)"]
    assert rows[3][1].startswith("invalid UTF-8") and "caf\ufffd" in rows[3][2]
    assert rows[1][2].startswith("{") and "10:00:00" in rows[1][2]


def test_an_interrupted_run_resumes_after_its_last_committed_batch(sqlite_store, tmp_path, world):
    path = write_jsonl(tmp_path / "f.jsonl", world[:1000])

    class Stop(Exception):
        pass

    def crash_after_three_batches(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 3:
            raise Stop

    calls: list[int] = []
    with pytest.raises(Stop):
        ingest_files(sqlite_store, [path], progress=crash_after_three_batches, batch_lines=100)
    assert sqlite_store.count_events() == 300
    r = ingest_files(sqlite_store, [path], batch_lines=100)
    assert (r.read, r.accepted, r.duplicates) == (700, 700, 0)
    assert r.per_file[str(path.resolve())].resumed_from > 0 and sqlite_store.count_events() == 1000


def test_appended_lines_are_read_and_a_replaced_file_is_read_again(sqlite_store, tmp_path, world):
    path = write_jsonl(tmp_path / "f.jsonl", world[:10])
    assert ingest_files(sqlite_store, [path]).accepted == 10
    with path.open("a") as f:
        f.write("".join(json.dumps(e) + "\n" for e in world[10:15]))
    r = ingest_files(sqlite_store, [path])
    assert (r.read, r.accepted) == (5, 5)
    write_jsonl(path, world[100:130])  # new content, longer than the checkpoint
    r = ingest_files(sqlite_store, [path])
    assert (r.read, r.accepted, r.per_file[str(path.resolve())].resumed_from) == (30, 30, 0)
    write_jsonl(path, world[:3])  # truncated to old content
    r = ingest_files(sqlite_store, [path])
    assert (r.read, r.accepted, r.duplicates) == (3, 0, 3)


def test_a_corrupt_gzip_is_reported_and_the_lines_before_it_kept(sqlite_store, tmp_path, world):
    data = gzip.compress("".join(json.dumps(e) + "\n" for e in world[:2000]).encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    r = ingest_files(sqlite_store, [path], batch_lines=100)
    assert r.errors and str(path.resolve()) in r.errors[0]
    assert 0 < r.accepted < 2000 and identity_holds(r) and sqlite_store.count_events() == r.accepted


def test_an_over_long_line_is_quarantined_without_parsing_it(sqlite_store, tmp_path, world, monkeypatch):
    monkeypatch.setattr(ingest, "MAX_LINE_BYTES", 1000)
    long_row = {**world[0], "prompt": "x" * 5000}
    path = write_jsonl(tmp_path / "long.jsonl", [world[1], long_row, world[2]])
    r = ingest_files(sqlite_store, [path])
    assert (r.read, r.accepted, r.quarantined) == (3, 2, 1) and r.reasons == {"(line): too long": 1}


def test_a_missing_file_is_an_input_error(sqlite_store, tmp_path):
    with pytest.raises(InputError, match="no such file"):
        ingest_files(sqlite_store, [tmp_path / "nope.jsonl"])


# ------------------------------------------------------------------ parse_row
ROW = {
    "ts": "2026-11-01T12:00:00+02:00",
    "prompt": "where is my refund",
    "response": "soon",
    "rating": 4,
    "thumbs_up": True,
    "segment": {"topic": "billing"},
}


def test_parse_row_normalises_time_and_rating_and_keeps_the_raw_value():
    e = parse_row({**ROW, "model_version": 3, "trace": "abc"}, "a.jsonl", now=NOW)
    assert e.ts == datetime(2026, 11, 1, 10, tzinfo=UTC) and e.ts.utcoffset() == timedelta(0)
    assert (e.rating, e.rating_raw, e.model_version) == (0.75, "4", "3")
    assert e.metadata == {"trace": "abc"}  # unknown keys are kept, not lost
    for stars, norm in [(1, 0.0), (5, 1.0), ("3", 0.5), (2.0, 0.25)]:
        assert parse_row({**ROW, "rating": stars}, "a", now=NOW).rating == norm


def test_event_id_hashes_the_namespace_and_content_not_the_file_or_offset_notation():
    a = parse_row(ROW, "a.jsonl", now=NOW, id_namespace="app")
    b = parse_row({**ROW, "ts": "2026-11-01T10:00:00Z"}, "b.jsonl.gz", now=NOW, id_namespace="app")
    c = parse_row({**ROW, "response": "later"}, "a.jsonl", now=NOW, id_namespace="app")
    other = parse_row(ROW, "a.jsonl", now=NOW, id_namespace="other-app")
    assert a.event_id == b.event_id != c.event_id and len(a.event_id) == 32
    assert other.event_id not in (a.event_id, parse_row(ROW, "a.jsonl", now=NOW).event_id)
    assert parse_row({**ROW, "event_id": "given-1"}, "a", now=NOW, id_namespace="app").event_id == "given-1"


@pytest.mark.parametrize(
    "change, key",
    [
        ({"ts": "2026-11-01 12:00"}, "ts: no timezone"),
        ({"ts": "yesterday"}, "ts: not ISO-8601"),
        ({"ts": "2026-11-22T00:00:00+00:00"}, "ts: more than 1 day in the future"),
        ({"ts": "1969-12-31T23:59:59+00:00"}, "ts: before 1970"),
        ({"rating": 0}, "rating: not 1-5 stars"),
        ({"rating": 2.5}, "rating: not 1-5 stars"),
        ({"rating": True}, "rating: not 1-5 stars"),
        ({"thumbs_up": "maybe"}, "thumbs_up: not a boolean"),
        ({"segment": {"tier": 1}}, "segment: values must be strings"),
        ({"prompt": "  "}, "prompt: empty"),
        ({"tokens_in": -1}, "tokens_in: out of range"),
        ({"latency_ms": "fast"}, "latency_ms: not a number"),
        ({"event_id": "x" * 65}, "event_id: longer than 64 characters"),
    ],
)
def test_parse_row_names_the_field_and_the_problem(change, key):
    with pytest.raises(RowError) as err:
        parse_row({**ROW, **change}, "a", now=NOW)
    assert err.value.key == key


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
# Text a database cannot store (NUL, a lone surrogate) among ordinary text.
wild_text = st.text(max_size=12) | st.text(st.sampled_from(["\x00", "\ud800", "a", "\u00e9", " "]), max_size=5)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
past_ts = st.datetimes(max_value=datetime(2026, 11, 20)).map(lambda d: d.replace(tzinfo=UTC).isoformat())
ts_strings = st.datetimes().flatmap(
    lambda d: st.sampled_from([d.isoformat()]) | offsets.map(lambda tz: d.replace(tzinfo=tz).isoformat())
)
# Each field: mostly plausible values (so later checks are reached), sometimes any JSON.
fields = {
    "ts": past_ts | ts_strings,
    "prompt": wild_text,
    "response": wild_text,
    "correction": wild_text,
    "model_version": wild_text | st.integers(),
    "event_id": wild_text | st.integers(),
    "rating": st.integers(-2, 8) | st.floats() | st.text(max_size=3),
    "thumbs_up": st.booleans(),
    "segment": st.dictionaries(wild_text, wild_text | json_values, max_size=3),
    "latency_ms": st.floats() | st.integers(),
    "tokens_in": st.integers() | st.floats(),
    "tokens_out": st.integers(),
    "metadata": st.dictionaries(wild_text, json_values, max_size=3),
    "extra": json_values,
}
rows = st.fixed_dictionaries(
    {"ts": past_ts, "prompt": st.text(min_size=1)},
    optional={k: v for k, v in fields.items() if k not in ("ts", "prompt")},
)
fields = {k: v | json_values for k, v in fields.items()}


@settings(max_examples=200, deadline=None)
@given(obj=rows | st.fixed_dictionaries({}, optional=fields) | json_values)
def test_parse_row_raises_nothing_but_row_error(obj):
    try:
        e = parse_row(obj, "fuzz", now=NOW)
    except RowError as err:
        event(err.key)
        assert err.field and err.problem
    else:
        event("accepted")
        assert isinstance(e, FeedbackEvent) and e.ts.tzinfo is not None and len(e.event_id) <= 64
        assert datetime(1970, 1, 1, tzinfo=UTC) <= e.ts <= NOW + timedelta(days=1)


clean_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)


@settings(max_examples=150, deadline=None)
@given(
    when=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2026, 11, 20)),
    tz=offsets,
    prompt=clean_text.filter(lambda s: s.strip()),
    response=clean_text,
    stars=st.none() | st.integers(1, 5),
    thumbs=st.none() | st.booleans(),
    segment=st.dictionaries(st.from_regex(SEGMENT_KEY, fullmatch=True), clean_text, max_size=3),
    tokens=st.none() | st.integers(0, 2**31 - 1),
)
def test_valid_rows_round_trip_through_a_jsonl_line(when, tz, prompt, response, stars, thumbs, segment, tokens):
    row = {
        "ts": when.replace(tzinfo=tz).isoformat(),
        "prompt": prompt,
        "response": response,
        "rating": stars,
        "thumbs_up": thumbs,
        "segment": segment,
        "tokens_in": tokens,
    }
    e = decode_line(json.dumps(row).encode(), "a.jsonl")
    assert e.ts == when.replace(tzinfo=tz) and e.ts.utcoffset() == timedelta(0)
    assert (e.prompt, e.response, e.thumbs_up, e.segment, e.tokens_in) == (prompt, response, thumbs, segment, tokens)
    assert e.rating == (None if stars is None else (stars - 1) / 4)
    assert e.rating_raw == (None if stars is None else str(stars))
    assert e.event_id == parse_row(row, "b.jsonl.gz").event_id


def test_edge_rows_that_parse_row_accepts_can_be_stored(store):
    rows = [
        {
            "ts": "1970-01-01T00:00:00+00:00",
            "prompt": "p\u00e9 \U0001f600",
            "event_id": "x" * 64,
            "model_version": "v" * 128,
            "tokens_in": 2**31 - 1,
            "segment": {"locale": "d\u00e9"},
        },
        {
            "ts": "2026-11-20T22:59:59.999999-00:30",
            "prompt": "q",
            "metadata": {"n": 10**30, "deep": [[{"k": "\u00e9"}]]},
            "correction": "",
            "latency_ms": 1e300,
            "rating": "5",
        },
    ]
    events = [parse_row(r, "edge", now=NOW) for r in rows]
    assert events[1].correction is None  # an empty correction is no correction
    assert store.add_events(events, "edge") == (2, 0)
    df = store.read_window(datetime(1970, 1, 1, tzinfo=UTC), NOW + timedelta(days=2), ["locale"])
    assert df["prompt_len"].tolist() == [4, 1] and df["locale"].tolist() == ["d\u00e9", ""]
