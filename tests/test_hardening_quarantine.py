"""A bad row is quarantined once: a rerun from scratch, a copied file, concurrent ingests and a
client's retry add no second quarantine row (each has a content id, as events do)."""

from __future__ import annotations

import json
import shutil
import threading

import pytest

from driftloop.core.config import FileSource
from driftloop.ingest import ingest_files
from driftloop.ingest.pipeline import RowParser
from driftloop.ingest.rows import RowError

TS = "2026-11-01T10:00:00+00:00"


def lines(n_bad: int) -> str:
    good = [json.dumps({"event_id": f"g{i}", "ts": TS, "prompt": "q"}) for i in range(50)]
    bad = [json.dumps({"event_id": f"b{i}", "ts": "2026-11-01T10:00:00", "prompt": "q"}) for i in range(n_bad)]
    return "\n".join(good + bad + ["{not json", "[1, 2]"]) + "\n"


@pytest.mark.parametrize("fast", [True, False], ids=["columnar", "rows"])
def test_copies_reruns_and_concurrent_ingests_quarantine_each_bad_row_once(store, tmp_path, monkeypatch, fast):
    if not fast:
        monkeypatch.setattr("driftloop.ingest.columnar.available", lambda: False)
    a = tmp_path / "in" / "a.jsonl"
    a.parent.mkdir()
    a.write_text(lines(30))
    src = FileSource(path=str(tmp_path / "in" / "*.jsonl"))
    assert ingest_files(store, [(a, src)]).quarantined == 32
    assert store.count_quarantine() == 32
    shutil.copy(a, tmp_path / "in" / "copy.jsonl")
    ingest_files(store, [(tmp_path / "in" / "copy.jsonl", src)])
    store.engine.dispose()
    with store.engine.begin() as conn:  # a rerun from scratch: every checkpoint gone
        conn.exec_driver_sql("DELETE FROM ingest_checkpoint")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ingest_files(store, [(a, src)])
        except Exception as e:  # collected: the assertion below shows it
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and store.count_quarantine() == 32 and store.count_events() == 50


def test_a_retried_request_quarantines_its_bad_event_once(store):
    parser = RowParser(id_namespace="http:/v1/feedback")
    row = {"ts": "yesterday", "prompt": "q"}
    for _ in range(3):
        try:
            parser.event(row, "http:/v1/feedback")
        except RowError as e:
            store.add_batch([], [parser.quarantine(json.dumps(row), e, "http:/v1/feedback")], "http:/v1/feedback")
    assert store.count_quarantine() == 1
