"""Quarantine rows say where each row was: its line in a JSONL or CSV file, its Parquet row, its SQL key.

Both JSONL paths (columnar and row) must give the same line numbers, counting
blank lines, CRLF line ends and over-long lines, and go on counting when a
file is resumed; the child-process path too (test_ingest_fast and
test_ingest_worker compare every quarantine column across the paths).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from test_ingest_fast import GOOD, ingest

from driftloop.core.config import FieldMapping, FileSource, SqlSource
from driftloop.ingest import files, ingest_files, worker
from driftloop.ingest.sql import ingest_sql
from driftloop.store import Store

BAD_TS = {"ts": "2026-11-01T10:00:00", "prompt": "naive"}


def located(store: Store) -> list[tuple]:
    with store.engine.connect() as c:
        return [tuple(r) for r in c.execute(text("SELECT line, row_key, field FROM quarantine ORDER BY line, id"))]


def jsonl(path: Path, parts: list[str]) -> Path:
    path.write_bytes("".join(parts).encode())
    return path


@pytest.mark.parametrize("fast", [True, False])
def test_jsonl_lines_count_blank_crlf_and_over_long_lines_and_go_on_after_a_resume(
    sqlite_store, tmp_path, monkeypatch, fast
):
    monkeypatch.setattr(files, "MAX_LINE_BYTES", 400)
    good = [json.dumps({**GOOD, "event_id": f"g{i}"}) + "\n" for i in range(4)]
    p = jsonl(
        tmp_path / "f.jsonl",
        [
            good[0],  # 1
            "\n",  # 2 blank
            "{bad json\r\n",  # 3
            json.dumps(BAD_TS) + "\n",  # 4
            "   \n",  # 5 blank
            '{"prompt": "' + "x" * 500 + '"}\n',  # 6 over-long
            good[1],  # 7
        ],
    )
    ingest(sqlite_store, [p], fast, batch_lines=2)
    assert [r[0] for r in located(sqlite_store)] == [3, 4, 6]
    with p.open("a") as f:  # appended rows: resumed at the checkpoint, lines go on from there
        f.write(good[2] + "\n" + json.dumps({**BAD_TS, "event_id": "b9"}) + "\n")
    ingest(sqlite_store, [p], fast, batch_lines=2)
    assert [r[0] for r in located(sqlite_store)] == [3, 4, 6, 10]


def test_lines_from_a_child_process_start_after_its_head_start(sqlite_store, tmp_path, monkeypatch):
    monkeypatch.setattr(worker, "PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(worker, "HEAD_START_BYTES", 700)  # a few lines here, the rest in the child
    rows = [
        json.dumps({**GOOD, "event_id": f"g{i}"}) if i % 7 else json.dumps({**BAD_TS, "event_id": f"b{i}"})
        for i in range(1, 60)
    ]
    p = jsonl(tmp_path / "f.jsonl", [r + "\n" for r in rows])
    report = ingest_files(sqlite_store, [p], batch_lines=5)
    assert report.quarantined == 8
    assert [r[0] for r in located(sqlite_store)] == list(range(7, 60, 7))


def test_csv_lines_are_where_each_record_starts_header_and_quoted_line_breaks_counted(sqlite_store, tmp_path):
    p = tmp_path / "f.csv"
    p.write_text(
        "ts,prompt,rating\n"  # 1
        f"{GOOD['ts']},fine,4\n"  # 2
        f'{GOOD["ts"]},"two\nlines",9\n'  # 3-4: rating out of range
        "\n"  # 5 blank
        f"{GOOD['ts']},ragged\n"  # 6
        "2026-11-01T10:00:00,naive,3\n"  # 7
    )
    src = FileSource(path=str(p))
    ingest_files(sqlite_store, [(p, src)])
    assert [(r[0], r[2]) for r in located(sqlite_store)] == [(3, "rating"), (6, "(row)"), (7, "ts")]


def test_parquet_rows_are_numbered_from_one(sqlite_store, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "f.parquet"
    prompts = ["a", None, "c", None]
    pq.write_table(pa.table({"event_id": ["1", "2", "3", "4"], "ts": [GOOD["ts"]] * 4, "prompt": prompts}), p)
    ingest_files(sqlite_store, [(p, FileSource(path=str(p)))])
    assert [r[0] for r in located(sqlite_store)] == [2, 4]


def test_sql_rows_are_located_by_their_primary_key_or_the_watermark(sqlite_store, tmp_path):
    url = f"sqlite:///{tmp_path / 'team.db'}"
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(text("CREATE TABLE log (id INTEGER PRIMARY KEY, created TEXT, question TEXT)"))
        c.execute(text("CREATE TABLE nokey (seq INTEGER, created TEXT, question TEXT)"))
        for t in ("log", "nokey"):
            c.execute(
                text(f"INSERT INTO {t} VALUES (1, :ts, 'ok'), (2, :ts, NULL), (3, '2026-11-01', 'x')"),
                {"ts": GOOD["ts"]},
            )
    eng.dispose()
    m = FieldMapping(fields={"prompt": "question", "ts": "created"})
    ingest_sql(sqlite_store, SqlSource(url=url, table="log", watermark="created", mapping=m))
    assert sorted(r[1] for r in located(sqlite_store)) == ['{"id": 2}', '{"id": 3}']
    with sqlite_store.engine.begin() as c:
        c.execute(text("DELETE FROM quarantine"))
    ingest_sql(sqlite_store, SqlSource(url=url, table="nokey", watermark="seq", mapping=m))
    assert sorted(r[1] for r in located(sqlite_store)) == ['{"seq": 2}', '{"seq": 3}']
