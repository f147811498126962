"""A field mapping that names a field the rows lack: the row is quarantined, or (a typo) nothing is stored.

A mapped field missing from one row quarantines that row when it maps a
field every event needs (prompt, response, ts, ...); a rating, correction or
other optional field may be missing from some rows. A mapped field that no
row of a run's first batch holds is a typo: the run stops with one line
naming the source and the field, and writes nothing.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from driftloop.app.cli import main
from driftloop.core.config import FieldMapping, FileSource, SqlSource, load_config
from driftloop.core.errors import ConfigError
from driftloop.ingest import RowError, RowParser, ingest_files
from driftloop.ingest.sql import ingest_sql, source_key

TS = "2026-11-01T10:00:00+00:00"
MAPPING = FieldMapping(fields={"prompt": "question", "response": "answer", "rating": "score"})


def row(i: int, **kw) -> dict:
    return {"event_id": f"e{i}", "ts": TS, "question": f"q{i}", "answer": f"a{i}", "score": 1 + i % 5, **kw}


def jsonl(path: Path, rows: list[dict], mode: str = "w") -> Path:
    with open(path, mode) as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def nothing_stored(store, key: str) -> bool:
    return store.count_events() == 0 and store.count_quarantine() == 0 and store.get_checkpoint(key) is None


def test_a_row_without_a_mapped_required_field_is_quarantined_naming_it(sqlite_store, tmp_path):
    rows = [row(0), {k: v for k, v in row(1).items() if k != "answer"}, row(2), row(3, answer=None)]
    path = jsonl(tmp_path / "a.jsonl", rows)
    r = ingest_files(sqlite_store, [(path, FileSource(path=str(path), mapping=MAPPING))])
    assert (r.read, r.accepted, r.quarantined) == (4, 3, 1)
    assert r.reasons == {"response: mapped field 'answer' (-> response) missing": 1}
    with sqlite_store.engine.connect() as c:
        assert c.execute(text("SELECT field, reason FROM quarantine")).all() == [
            ("response", "mapped field 'answer' (-> response) missing")
        ]
        # A null cell is a value (no response), not a missing field.
        assert c.execute(text("SELECT response FROM feedback WHERE event_id = 'e3'")).scalar_one() == ""


def test_a_row_without_a_mapped_optional_field_is_kept_without_it(sqlite_store, tmp_path):
    mapping = FieldMapping(
        fields={**MAPPING.fields, "correction": "fix", "latency_ms": "ms"}, segment_fields=["locale"]
    )
    rows = [row(0, fix="better", ms=12.5, locale="de"), {k: v for k, v in row(1).items() if k != "score"}]
    path = jsonl(tmp_path / "a.jsonl", rows)
    r = ingest_files(sqlite_store, [(path, FileSource(path=str(path), mapping=mapping))])
    assert (r.read, r.accepted, r.quarantined) == (2, 2, 0), r.reasons
    with sqlite_store.engine.connect() as c:
        got = c.execute(text("SELECT rating, correction, latency_ms FROM feedback WHERE event_id = 'e1'")).one()
    assert tuple(got) == (None, None, None)


def test_the_parser_names_the_users_field_for_the_api_and_every_source():
    with pytest.raises(RowError) as e:
        RowParser(MAPPING).event({"ts": TS, "question": "q", "respnse": "a"}, "x")
    assert (e.value.field, e.value.problem) == ("response", "mapped field 'answer' (-> response) missing")
    assert RowParser(MAPPING).event({"ts": TS, "question": "q", "answer": "a"}, "x").rating is None


@pytest.mark.parametrize(
    "fields, segments, named",
    [
        ({"prompt": "question", "response": "respnse"}, [], "mapped field 'respnse' (-> response)"),
        ({"prompt": "question", "rating": "scroe"}, [], "mapped field 'scroe' (-> rating)"),
        ({"prompt": "question"}, ["locle"], "segment field 'locle'"),
    ],
)
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_a_mapped_field_in_no_row_of_the_first_batch_stops_the_file_before_anything_is_stored(
    sqlite_store, tmp_path, fields, segments, named, fmt
):
    rows = [row(i, locale="de") for i in range(5)] + [{"ts": "never"}]  # one bad row: no quarantine either
    path = tmp_path / f"a.{fmt}"
    if fmt == "jsonl":
        jsonl(path, rows)
    else:
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{k: str(v) for k, v in r.items()} for r in rows[:5]])
        pcsv.write_csv(table, path) if fmt == "csv" else pq.write_table(table, path)
    src = FileSource(path=str(path), mapping=FieldMapping(fields=fields, segment_fields=segments))
    with pytest.raises(ConfigError) as e:
        ingest_files(sqlite_store, [(path, src)], batch_lines=100)
    msg = str(e.value)
    assert msg.startswith(f"{path.resolve()}: {named} is in none of the ") and "\n" not in msg
    assert nothing_stored(sqlite_store, f"file:{path.resolve()}")


def test_a_typo_is_caught_in_the_first_batch_even_when_later_rows_have_the_field(sqlite_store, tmp_path):
    path = jsonl(tmp_path / "a.jsonl", [row(i) for i in range(5)] + [row(5, respnse="x")])
    src = FileSource(path=str(path), mapping=FieldMapping(fields={"prompt": "question", "response": "respnse"}))
    with pytest.raises(ConfigError, match="'respnse' .* none of the 3 rows of the first batch"):
        ingest_files(sqlite_store, [(path, src)], batch_lines=3)
    assert nothing_stored(sqlite_store, f"file:{path.resolve()}")


def test_a_resumed_run_with_a_few_rows_may_all_lack_an_optional_field(sqlite_store, tmp_path):
    path = jsonl(tmp_path / "a.jsonl", [row(i) for i in range(4)])
    src = FileSource(path=str(path), mapping=MAPPING)
    assert ingest_files(sqlite_store, [(path, src)]).accepted == 4
    jsonl(path, [{k: v for k, v in row(i).items() if k != "score"} for i in range(4, 6)], mode="a")
    again = ingest_files(sqlite_store, [(path, src)])  # two unrated rows since the checkpoint: no typo
    assert (again.read, again.accepted) == (2, 2) and sqlite_store.count_events() == 6
    jsonl(path, [{k: v for k, v in row(i).items() if k != "answer"} for i in range(6, 8)], mode="a")
    key, before = f"file:{path.resolve()}", sqlite_store.get_checkpoint(f"file:{path.resolve()}")
    with pytest.raises(ConfigError, match="'answer' \\(-> response\\) is in none of the 2 rows"):
        ingest_files(sqlite_store, [(path, src)])  # a required field: no row of the batch can be stored
    assert sqlite_store.get_checkpoint(key) == before and sqlite_store.count_quarantine() == 0


def test_a_sql_mapping_typo_stores_nothing_and_keeps_the_watermark(sqlite_store, tmp_path):
    team = tmp_path / "team.db"
    with sqlite3.connect(team) as c:
        c.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, ts TEXT, question TEXT, stars INTEGER)")
        c.executemany("INSERT INTO log VALUES (?, ?, ?, ?)", [(i, TS, f"q{i}", 4) for i in range(1, 6)])
    src = SqlSource(
        url=f"sqlite:///{team}",
        table="log",
        watermark="id",
        batch_rows=2,
        mapping=FieldMapping(fields={"prompt": "question", "rating": "starz"}),
    )
    with pytest.raises(ConfigError, match=r"^sql:log: mapped field 'starz' \(-> rating\) is in none of the 2 rows"):
        ingest_sql(sqlite_store, src)
    assert nothing_stored(sqlite_store, source_key(src))
    good = src.model_copy(update={"mapping": FieldMapping(fields={"prompt": "question", "rating": "stars"})})
    assert ingest_sql(sqlite_store, good).accepted == 5


def test_driftloop_ingest_exits_2_with_one_line_and_writes_nothing(tmp_path, prefect_harness, capsys):
    (tmp_path / "fb").mkdir()
    jsonl(tmp_path / "fb" / "a.jsonl", [row(i) for i in range(3)])
    cfg_path = tmp_path / "driftloop.yaml"
    cfg_path.write_text(
        "sources:\n  - path: fb/*.jsonl\n    mapping: {fields: {prompt: question, response: respnse}}\n"
    )
    assert main(["--config", str(cfg_path), "ingest"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"driftloop: error: {tmp_path / 'fb' / 'a.jsonl'}: mapped field 'respnse' (-> response) "
        "is in none of the 3 rows of the first batch; nothing was stored"
    )
    from driftloop.store import Store

    cfg = load_config(cfg_path, check_files=False)
    store = Store(cfg.store_url)
    store.migrate()
    try:
        assert nothing_stored(store, f"file:{(tmp_path / 'fb' / 'a.jsonl').resolve()}")
    finally:
        store.close()
