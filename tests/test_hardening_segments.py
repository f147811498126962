"""Segment keys and values are bounded: each names metric series and monitor artifacts on every run."""

from __future__ import annotations

import json

import pytest

from driftloop.core.config import FieldMapping, FileSource
from driftloop.ingest import ingest_files

TS = "2026-11-01T10:00:00+00:00"


def row(i: int, segment: dict) -> str:
    return json.dumps({"event_id": f"s{i}", "ts": TS, "prompt": "q", "segment": segment}) + "\n"


@pytest.mark.parametrize("fast", [True, False], ids=["columnar", "rows"])
def test_long_segment_values_many_keys_and_odd_keys_are_quarantined(sqlite_store, tmp_path, monkeypatch, fast):
    if not fast:
        monkeypatch.setattr("driftloop.ingest.columnar.available", lambda: False)
    path = tmp_path / "f.jsonl"
    path.write_text(
        row(0, {"tier": "x" * 3_000_000})
        + row(1, {f"k{j}": "v" for j in range(17)})
        + row(2, {"k" * 65: "v"})
        + row(3, {"a\nb": "v"})
        + row(4, {"tier": "x" * 256, "locale": "de"})
    )
    report = ingest_files(sqlite_store, [path])
    assert (report.accepted, report.quarantined) == (1, 4)
    assert report.reasons == {
        "segment: value longer than 256 characters": 1,
        "segment: more than 16 keys": 1,
        "segment: key not a safe name": 2,
    }
    assert sqlite_store.count_events() == 1


def test_the_bounds_are_settings_of_the_source(sqlite_store, tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text(row(0, {"tier": "x" * 1000}) + row(1, {"a": "1", "b": "2", "c": "3"}))
    src = FileSource(path=str(path), mapping=FieldMapping(segment_value_max_chars=1000, segment_max_keys=2))
    report = ingest_files(sqlite_store, [(path, src)])
    assert (report.accepted, dict(report.reasons)) == (1, {"segment: more than 2 keys": 1})
