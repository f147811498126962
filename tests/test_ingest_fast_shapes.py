"""The columnar fast path with a mapping, thumbs, CSV and Parquet stores exactly what the row path stores.

As tests/test_ingest_fast.py: each file is ingested twice, with the fast path
allowed and with every row forced through the row path, and the stored
tables (quarantine lines included) and reports must be identical.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ingest_fast import counts, ingest, pair, tables  # noqa: F401 - pair is a fixture
from test_ingest_fast import rows as gen_rows

from driftloop.core.config import FieldMapping, FileSource
from driftloop.core.errors import ConfigError
from driftloop.ingest import columnar

TS = "2026-11-01T10:00:00+00:00"
NAMES = {
    "event_id": "id",
    "ts": "created_at",
    "model_version": "model",
    "prompt": "question",
    "response": "answer",
    "rating": "feedback",
}
MAPPING = FieldMapping(fields=NAMES, segment_fields=["topic", "locale"], rating_scale="thumbs")
USER = {
    "id": "u1",
    "created_at": TS,
    "model": "3",
    "question": "where is my refund",
    "answer": "soon",
    "feedback": "up",
    "topic": "billing",
    "locale": "en",
    "latency_ms": 120.5,
    "tokens_in": 12,
}


def mapped_rows() -> list[dict | str]:
    """Rows in the team's own names: valid ones in many shapes, and faults the row path must name."""
    out: list[dict | str] = [USER]
    for i, change in enumerate(
        [
            {"feedback": "down"},
            {"feedback": "UP"},
            {"feedback": " up"},  # blanks: row path
            {"feedback": True},
            {"feedback": 0},
            {"feedback": -1},
            {"feedback": 1.0},
            {"feedback": "meh"},  # not a thumbs value: quarantined
            {"feedback": None},
            {"feedback": ""},
            {"feedback": "up", "thumbs_up": False},
            {"topic": None},  # part of the segment
            {"topic": None, "locale": None},  # no segment
            {"topic": ""},
            {"topic": 3},
            {"topic": 'a "quoted" value'},
            {"locale": "caf\u00e9"},
            {"id": None},  # a null id: content hash
            {"answer": None},
            {"question": "mail me at bob@example.com", "answer": "call +1 415 555 0100"},
            {"created_at": "2026-11-01T10:00:00"},  # no timezone
            {"extra": "x"},  # metadata
            {"prompt": "own name beside the mapped one"},
            {"segment": {"tier": "a"}},
            {"tokens_in": -1},
            {"latency_ms": "fast"},
        ]
    ):
        out.append({**USER, "id": f"u{i + 2}", **change})
    missing = {k: v for k, v in USER.items() if k != "answer"}
    out += [{**missing, "id": "m1"}, {k: v for k, v in USER.items() if k != "id"}, "{not json", USER]
    return out


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("batch_lines", [1000, 4])
def test_mapped_jsonl_with_thumbs_is_stored_identically_by_both_paths(pair, tmp_path, batch_lines):  # noqa: F811
    path = write_jsonl(tmp_path / "mapped.jsonl", mapped_rows())
    src = FileSource(path=str(path), mapping=MAPPING)
    fast, row = (
        ingest(pair[0], [(path, src)], True, batch_lines=batch_lines),
        ingest(pair[1], [(path, src)], False, batch_lines=batch_lines),
    )
    assert counts(fast) == counts(row)
    a, b = tables(pair[0]), tables(pair[1])
    assert a == b
    assert fast.accepted >= 15 and fast.quarantined >= 5 and all(r[4] for r in a["quarantine"])


def test_mapped_jsonl_takes_the_fast_path_for_plain_rows(sqlite_store, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "mapped.jsonl", [{**USER, "id": f"u{i}"} for i in range(50)])
    taken: list[int] = []
    real = columnar._fast_rows
    monkeypatch.setattr(
        columnar, "_fast_rows", lambda *a, **kw: (lambda r: taken.append(len(r[0])) or r)(real(*a, **kw))
    )
    report = ingest(sqlite_store, [(path, FileSource(path=str(path), mapping=MAPPING))], True)
    assert report.accepted == 50 and sum(taken) == 50


def both_ways(pair, files: list, **kw) -> tuple:  # noqa: F811
    fast, row = ingest(pair[0], files, True, **kw), ingest(pair[1], files, False, **kw)
    assert counts(fast) == counts(row)
    a, b = tables(pair[0]), tables(pair[1])
    for name in a:
        assert a[name] == b[name], name
    return fast, a


CSV_HEADER = "event_id,ts,model_version,prompt,response,rating,thumbs_up,topic,locale,latency_ms,tokens_in\r\n"


def csv_lines() -> list[bytes]:
    good = f"c{{}},{TS},3,where is my refund,soon,4,true,billing,en,120.5,12\r\n"
    out = [good.format(i).encode() for i in range(3)]
    for i, row in enumerate(
        [
            f'c{{}},{TS},3,"refund, please","he said ""soon""",5,TRUE,billing,en,1,2',
            f"c{{}},{TS},3,q,,,,,,,",  # empty cells: nulls
            f"c{{}},{TS},3,q,r,4.0,yes,a,b,1e3,12.0",  # numbers written otherwise: row path
            f"c{{}},{TS},3,q,r,6,maybe,a,b,1, 3",  # out of range, not a boolean
            f"c{{}},{TS},3,q,r,2,false,a,,5,5",  # part of the segment
            f"c{{}},{TS},3,caf\u00e9,r,2,false,a,b,5,5",  # non-ASCII
            f"c{{}},{TS},3,mail bob@example.com,call +1 415 555 0100,3,false,a,b,5,5",
            f",{TS},3,no id,r,3,false,a,b,5,5",
            "c{},2026-11-01T10:00:00,3,naive,r,3,false,a,b,5,5",
            f"c{{}},{TS},3,ragged",
            "",
            "   ",
            '""',
            f"c{{}},{TS},3,tab\there,r,1,false,a,b,5,5",
            f"c{{}},{TS},3,back\\slash,r,1,false,a,b,5,5",
        ]
    ):
        out.append((row.format(100 + i) + "\r\n").encode())
    out.append(b"c200," + TS.encode() + b",3,bad \xff utf8,r,1,false,a,b,5,5\r\n")
    return out


@pytest.mark.parametrize("batch_lines", [1000, 3])
def test_csv_is_stored_identically_by_both_paths(pair, tmp_path, batch_lines):  # noqa: F811
    path = tmp_path / "f.csv"
    path.write_bytes(CSV_HEADER.encode() + b"".join(csv_lines() * 2) + b"c300," + TS.encode() + b",3,last,r,1,,a,b,,")
    src = FileSource(path=str(path), mapping=FieldMapping(segment_fields=["topic", "locale"]))
    fast, a = both_ways(pair, [(path, src)], batch_lines=batch_lines)
    assert fast.accepted >= 10 and fast.quarantined >= 4 and all(r[4] for r in a["quarantine"])


def test_csv_hands_over_to_the_row_path_at_a_quoted_line_break(pair, tmp_path):  # noqa: F811
    path = tmp_path / "f.csv"
    broken = f'c900,{TS},3,"two\nlines",r,1,false,a,b,5,5\n'.encode()
    path.write_bytes(CSV_HEADER.encode() + b"".join(csv_lines()) + broken + b"".join(csv_lines()).replace(b"c", b"d"))
    src = FileSource(path=str(path), mapping=FieldMapping(segment_fields=["topic", "locale"], rating_scale="thumbs"))
    both_ways(pair, [(path, src)], batch_lines=4)


def test_parquet_is_stored_identically_by_both_paths(pair, tmp_path):  # noqa: F811
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 40
    ids = [f"p{i}" if i % 9 else None for i in range(n)]
    prompts = ["where is my refund" if i % 7 else ("mail bob@example.com" if i % 2 else None) for i in range(n)]
    table = pa.table(
        {
            "event_id": ids,
            "ts": [TS if i % 11 else "2026-11-01T10:00:00" for i in range(n)],
            "prompt": pa.array(prompts, pa.large_string()),
            "response": ["soon" if i % 5 else "caf\u00e9" for i in range(n)],
            "rating": pa.array([(i % 7) or None for i in range(n)], pa.int32()),  # 6: out of range
            "thumbs_up": [bool(i % 2) for i in range(n)],
            "topic": pa.array(["billing" if i % 4 else None for i in range(n)]).dictionary_encode(),
            "locale": ["en"] * n,
            "latency_ms": pa.array([float(i) for i in range(n)], pa.float32()),
            "tokens_in": pa.array(list(range(n)), pa.int16()),
        }
    )
    path = tmp_path / "f.parquet"
    pq.write_table(table, path, row_group_size=16)
    src = FileSource(path=str(path), mapping=FieldMapping(segment_fields=["topic", "locale"]), id_namespace="t")
    fast, a = both_ways(pair, [(path, src)], batch_lines=7)
    assert fast.accepted >= 20 and fast.quarantined >= 3 and all(r[4] for r in a["quarantine"])
    stamped = tmp_path / "ts.parquet"  # a timestamp column: the row path takes those batches
    pq.write_table(table.set_column(1, "ts", pa.array([datetime(2026, 11, 1, 10, tzinfo=UTC)] * n)), stamped)
    both_ways(pair, [(stamped, FileSource(path=str(stamped), id_namespace="t"))], batch_lines=7)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_csv_and_parquet_parsed_in_a_child_process_match_the_row_path(pair, tmp_path, monkeypatch, kind):  # noqa: F811
    from driftloop.ingest import tabular, worker

    monkeypatch.setattr(worker, "PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(tabular, "PROCESS_MIN_ROWS", 0)
    calls: list[str] = []
    real = worker.ingest_in_process
    monkeypatch.setattr(
        worker, "ingest_in_process", lambda *a, **kw: (lambda r: calls.append(r[0]) or r)(real(*a, **kw))
    )
    if kind == "csv":
        path = tmp_path / "f.csv"
        broken = f'c900,{TS},3,"two\nlines",r,1,false,a,b,5,5\n'.encode()  # the row path reads on from here
        path.write_bytes(CSV_HEADER.encode() + b"".join(csv_lines() * 3) + broken + b"".join(csv_lines()))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "f.parquet"
        n = 30
        pq.write_table(
            pa.table(
                {
                    "event_id": [f"p{i}" for i in range(n)],
                    "ts": [TS if i % 4 else "2026-11-01" for i in range(n)],
                    "prompt": [f"q {i}" for i in range(n)],
                    "rating": [i % 6 + 1 for i in range(n)],
                    "topic": ["a"] * n,
                }
            ),
            path,
        )
    src = FileSource(path=str(path), mapping=FieldMapping(segment_fields=["topic"]))
    fast, a = both_ways(pair, [(path, src)], batch_lines=5)
    assert calls and calls[0] == ("read_error" if kind == "csv" else "done")
    assert fast.quarantined >= 5 and all(r[4] for r in a["quarantine"])


CELLS = st.one_of(
    st.sampled_from(["", " ", "4", "4.0", "1e3", "up", "DOWN", "yes", "true", "-1", "x,y", 'say "hi"', "caf\u00e9"]),
    st.sampled_from([TS, "2026-11-01T10:00:00", "2026-11-01 10:00:00+02:00", "billing", "en", "bob@example.com"]),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6),
)
COLS = ["event_id", "ts", "prompt", "response", "rating", "thumbs_up", "topic", "latency_ms", "tokens_in"]


def csv_cell(s: str) -> str:
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n\r') else s


@st.composite
def csv_line(draw) -> bytes:
    cells = [draw(CELLS) for _ in range(len(COLS) + draw(st.sampled_from([0, 0, 0, 0, -1, 1])))]
    if draw(st.booleans()) and len(cells) > 2:
        cells[1], cells[2] = TS, "a prompt"  # mostly valid rows
    text = ",".join(csv_cell(c) for c in cells)
    end = draw(st.sampled_from(["\n", "\r\n"]))
    if draw(st.integers(0, 20)) == 0:
        text = draw(st.sampled_from(["", "   ", '""', 'a"b,c', "\x1c"]))
    return (text + end).encode("utf-8", "surrogatepass")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(csv_line(), min_size=1, max_size=20), batch=st.integers(1, 8), thumbs=st.booleans())
def test_generated_csv_is_stored_identically_by_both_paths(pair, tmp_path, lines, batch, thumbs):  # noqa: F811
    path = tmp_path / f"gen-{len(list(tmp_path.iterdir()))}.csv"
    path.write_bytes((",".join(COLS) + "\n").encode() + b"".join(lines))
    scale = "thumbs" if thumbs else "stars"
    src = FileSource(
        path=str(path), mapping=FieldMapping(segment_fields=["topic"], rating_scale=scale), id_namespace="t"
    )
    both_ways(pair, [(path, src)], batch_lines=batch)


def test_a_one_column_csv_with_quoted_empty_cells_matches_the_row_path(pair, tmp_path):  # noqa: F811
    path = tmp_path / "one.csv"
    path.write_bytes(b'prompt\n""\nhello\n"x"\n  \n""\n')
    fast, _ = both_ways(pair, [(path, FileSource(path=str(path)))])
    assert fast.read == 2


@st.composite
def mapped_line(draw) -> bytes:
    """A generated row of tests/test_ingest_fast.py in the team's own names (segment keys as fields)."""
    raw = draw(gen_rows())
    try:
        obj = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(obj, dict):
        return raw
    seg = obj.pop("segment", None)
    out = {NAMES.get(k, k): v for k, v in obj.items()}
    if isinstance(seg, dict) and draw(st.booleans()):
        out.update({k: v for k, v in seg.items() if k in ("topic", "locale")})
    if draw(st.integers(0, 5)):  # most rows carry every mapped field (else: `mapped field ... missing`)
        out.setdefault("id", draw(st.sampled_from([None, "h1", "h2", "h 3"])))
        out.setdefault("model", draw(st.sampled_from([None, "3", "v1.2"])))
        out.setdefault("answer", draw(st.sampled_from([None, "", "fine", "call 415 555 0100"])))
        out.setdefault("feedback", draw(st.sampled_from(["up", "down", None])))
        out.setdefault("topic", draw(st.sampled_from([None, "billing", ""])))
        out.setdefault("locale", "en")
    if draw(st.integers(0, 4)) == 0:
        out["feedback"] = draw(st.sampled_from(["up", "Down", " up", "meh", True, 0, -1, 1.0, None, ""]))
    return json.dumps(out, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


@st.composite
def valid_line(draw) -> bytes:
    """A valid row in the team's names, some of its values varied."""
    row = {**USER, "id": draw(st.sampled_from([None, "v1", "v2", "v3"]))}
    row["feedback"] = draw(st.sampled_from(["up", "down", "UP", True, False, 1, 0, None]))
    row["topic"] = draw(st.sampled_from(["billing", None, "a b"]))
    row["question"] = draw(st.sampled_from(["hi", "mail a@b.io", "order 12"]))
    return json.dumps(row).encode()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(mapped_line(), valid_line()), min_size=1, max_size=20), batch=st.integers(1, 8))
def test_generated_mapped_jsonl_is_stored_identically_by_both_paths(pair, tmp_path, lines, batch):  # noqa: F811
    path = tmp_path / f"gen-{len(list(tmp_path.iterdir()))}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    files = [(path, FileSource(path=str(path), mapping=MAPPING, id_namespace="t"))]  # ids unique across examples
    got = []
    for store, fast in ((pair[0], True), (pair[1], False)):
        try:
            got.append(counts(ingest(store, files, fast, batch_lines=batch)))
        except ConfigError as e:  # a mapped field in none of the first batch's rows: both refuse alike
            got.append(str(e))
    assert got[0] == got[1]
    assert tables(pair[0]) == tables(pair[1])
