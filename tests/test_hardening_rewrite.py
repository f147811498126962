"""A feedback file regenerated in place (same first rows, other rows after) is read again, not resumed."""

from __future__ import annotations

import gzip
import json

import pytest

from driftloop.ingest import ingest_files

TS = "2026-11-01T10:00:00+00:00"


def line(i: int, tag: str) -> str:
    return json.dumps({"event_id": f"{tag}-{i}", "ts": TS, "prompt": f"question {i} from {tag}", "rating": 4}) + "\n"


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_a_file_rewritten_in_place_with_the_same_head_loses_no_row(store, tmp_path, gz):
    path = tmp_path / ("feedback.jsonl.gz" if gz else "feedback.jsonl")
    first = [line(i, "old") for i in range(1000)]
    write = (lambda p, t: p.write_bytes(gzip.compress(t.encode(), mtime=0))) if gz else (lambda p, t: p.write_text(t))
    write(path, "".join(first))
    assert ingest_files(store, [path]).accepted == 1000
    ino = path.stat().st_ino
    # Regenerated in place: the same first 100 rows (far more than 4 KB), then 1,150 others.
    write(path, "".join(first[:100] + [line(i, "new") for i in range(1150)]))
    assert path.stat().st_ino == ino
    report = ingest_files(store, [path])
    assert report.per_file[str(path.resolve())].resumed_from == 0
    assert (report.accepted, report.duplicates) == (1150, 100)
    assert store.count_events() == 1000 + 1150


def test_an_appended_file_still_resumes_where_it_stopped(store, tmp_path):
    path = tmp_path / "feedback.jsonl"
    path.write_text("".join(line(i, "a") for i in range(1000)))
    ingest_files(store, [path])
    size = path.stat().st_size
    with open(path, "a") as f:
        f.write("".join(line(i, "b") for i in range(10)))
    report = ingest_files(store, [path])
    assert report.per_file[str(path.resolve())].resumed_from == size
    assert (report.read, report.accepted) == (10, 10)
