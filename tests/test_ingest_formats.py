"""Exports as they come: epoch and naive timestamps, ratings written as floats, international phone numbers."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from driftloop.core.config import FieldMapping, FileSource
from driftloop.ingest import ingest_files
from driftloop.ingest.pipeline import RowParser
from driftloop.ingest.redact import Redactor
from driftloop.ingest.rows import RowError

WHEN = datetime(2025, 12, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "ts",
    [1764583200, 1764583200.0, "1764583200", 1764583200000, "1764583200000", 1764583200000000, "2025-12-01 11:00:00"],
)
def test_epoch_seconds_milliseconds_and_naive_times_in_the_configured_zone(ts):
    parser = RowParser(FieldMapping(timezone="Europe/Berlin"))  # 11:00 in Berlin on 1 Dec is 10:00 UTC
    assert parser.event({"ts": ts, "prompt": "hi"}, "x").ts == WHEN


def test_naive_time_without_a_zone_and_a_short_digit_string_stay_errors():
    parser = RowParser()
    for ts, problem in (
        ("2025-12-01 11:00:00", "no timezone"),
        ("20251201", "no timezone"),
        (float("nan"), "not a finite epoch number"),
    ):
        with pytest.raises(RowError) as e:
            parser.event({"ts": ts, "prompt": "hi"}, "x")
        assert e.value.problem == problem, ts
    with pytest.raises(ValueError, match="not an IANA time zone"):
        FieldMapping(timezone="Mars/Olympus")


@pytest.mark.parametrize(
    "scale,value,rating,thumb",
    [
        ("thumbs", 1.0, 1.0, True),
        ("thumbs", "0.0", 0.0, False),
        ("thumbs", 1, 1.0, True),
        ("stars", 5.0, 1.0, None),
        ("stars", "4.0", 0.75, None),
    ],
)
def test_a_rating_written_as_a_float_counts_like_the_integer(scale, value, rating, thumb):
    e = RowParser(FieldMapping(rating_scale=scale)).event(
        {"ts": WHEN.isoformat(), "prompt": "hi", "rating": value}, "x"
    )
    assert (e.rating, e.thumbs_up) == (rating, thumb)


def test_files_with_epoch_and_local_times_store_the_same_instants_on_both_paths(store, tmp_path):
    rows = [
        {"event_id": "s", "ts": 1764583200, "prompt": "a", "rating": 5.0},
        {"event_id": "ms", "ts": 1764583200000, "prompt": "b", "rating": 4},
        {"event_id": "iso", "ts": "2025-12-01T10:00:00Z", "prompt": "c"},
        {"event_id": "naive", "ts": "2025-12-01 10:00:00", "prompt": "d"},
    ]
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    csv = tmp_path / "export.csv"
    csv.write_text("event_id,ts,prompt,rating\nc-s,1764583200,a,5.0\nc-ms,1764583200000,b,1.0\n")
    utc = FileSource(path=str(tmp_path / "*"), mapping=FieldMapping(timezone="UTC"))
    report = ingest_files(store, [(path, utc), (csv, utc)])
    assert report.balanced and (report.accepted, report.quarantined) == (6, 0)
    with store.engine.connect() as c:
        got = dict(c.execute(text("SELECT event_id, rating FROM feedback")).all())
        times = {t for (t,) in c.execute(text("SELECT ts FROM feedback"))}
    assert got == {"s": 1.0, "ms": 0.75, "iso": None, "naive": None, "c-s": 1.0, "c-ms": 0.0}
    assert len(times) == 1  # one instant, however it was written


PHONES = [
    "+49 30 901820",  # stored verbatim before libphonenumber checked the numbers
    "+49 30 9018200",
    "+44 20 7946 0958",
    "+33 1 42 68 53 00",
    "+91 98765 43210",
    "+81 3-1234-5678",
    "+55 11 91234-5678",
    "+61 2 9876 5432",
    "+34 912 345 678",
    "+1 415 555 0134",
    "(415) 555-0134",
    "020 7946 0958",
    "030 901820",
    "01 42 68 53 00",
]
NOT_PHONES = [
    "(1874-1936)",
    "1999-2001",
    "2019-2021",
    "in 2024 2025 2026",
    "v2.3.4567",
    "order 1234-5678-90",
    "12 345 678",
]


def test_international_phone_numbers_are_redacted_and_years_ranges_and_order_numbers_are_not():
    r = Redactor()
    for p in PHONES:
        assert r.text(f"call {p} today") == "call [PHONE] today", p
    for s in NOT_PHONES:
        assert r.text(s) == s, s
    assert r.counts == {"phone": len(PHONES)}
    gb_only = Redactor(phone_regions=["GB"])
    assert gb_only.text("030 901820") == "030 901820"  # a German national number, not a British one
    assert gb_only.text("+49 30 901820") == "[PHONE]"  # any country with its code


def test_a_quarantined_row_names_the_users_field_as_mapped(store, tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(
        "id,created_at,question\nr1,2025-12-01 11:00:00,hi\nr2,2025-12-01T10:00:00Z,\nr3,2025-12-01T10:00:00Z,ok\n"
    )
    src = FileSource(
        path=str(path), mapping=FieldMapping(fields={"event_id": "id", "ts": "created_at", "prompt": "question"})
    )
    report = ingest_files(store, [(path, src)])
    assert report.balanced and (report.accepted, report.quarantined) == (1, 2)
    assert dict(report.reasons) == {"created_at (-> ts): no timezone": 1, "question (-> prompt): missing": 1}
    with store.engine.connect() as c:
        rows = c.execute(text("SELECT source, field, reason FROM quarantine ORDER BY field")).all()
    assert [(s, f) for s, f, _ in rows] == [
        (str(path.resolve()), "created_at (-> ts)"),
        (str(path.resolve()), "question (-> prompt)"),
    ]
    assert rows[0][2] == "no timezone (2025-12-01 11:00:00)"
