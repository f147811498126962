"""Big JSONL files parsed in a child process store exactly what the row path stores, and survive SIGKILL.

The child-process path is taken for files of PROCESS_MIN_BYTES or more; these
tests lower the bar to 0 so that small files take it, and compare tables and
reports with the row path (as tests/test_ingest_fast.py does for the thread
path), including a corrupt gzip, user patterns, a child that cannot start or
dies mid-file, and a SIGKILL of the parent.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from test_ingest_fast import EDGE, GOOD, counts, ingest, line, pair, same_both_ways, tables  # noqa: F401

from driftloop.ingest import ingest_files, worker
from driftloop.ingest.redact import Redactor
from driftloop.store import Store


@pytest.fixture(params=[0, 1000], ids=["all-in-child", "head-here"])
def in_child(monkeypatch, request):
    """Every JSONL file takes the child-process path (after a head of 0 or 1000 bytes parsed here).

    Yields the list of statuses `ingest_in_process` returned.
    """
    monkeypatch.setattr(worker, "PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(worker, "HEAD_START_BYTES", request.param)
    seen: list[str] = []
    real = worker.ingest_in_process

    def spy(*a, **kw):
        out = real(*a, **kw)
        seen.append(out[0])
        return out

    monkeypatch.setattr(worker, "ingest_in_process", spy)
    return seen


@pytest.mark.parametrize("batch_lines", [7, 2000])
def test_edge_rows_parsed_in_a_child_are_stored_as_the_row_path_stores_them(pair, tmp_path, in_child, batch_lines):
    path = tmp_path / "edge.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(EDGE[:5]) + b"\r\n" + b"\n".join(EDGE[5:]) + b"\n")
    read, accepted, dups, quarantined, _, redacted = same_both_ways(pair, [path], batch_lines=batch_lines)
    assert in_child == ["done"]
    assert read == len([x for x in EDGE if x.strip()]) and accepted >= 50 and quarantined >= 40 and dups >= 2
    assert redacted["email"] >= 2 and redacted["card"] == 1
    assert same_both_ways(pair, [path], batch_lines=batch_lines)[0] == 0  # checkpointed: nothing new to read


def test_a_corrupt_gzip_and_user_patterns_in_a_child_match_the_row_path(pair, tmp_path, in_child):
    import gzip

    good = [line({**GOOD, "event_id": f"z{i}", "prompt": f"p {i} EMP-{i:06d}"}) for i in range(3000)]
    data = gzip.compress(b"\n".join(good) + b"\n")
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) // 2])
    redactor = Redactor(patterns={"employee": r"EMP-\d{6}"})
    fast = ingest(pair[0], [cut], True, batch_lines=100, redactor=redactor)
    row = ingest(pair[1], [cut], False, batch_lines=100, redactor=Redactor(patterns={"employee": r"EMP-\d{6}"}))
    assert in_child == ["read_error"] and counts(fast) == counts(row) and tables(pair[0]) == tables(pair[1])
    assert 0 < fast.accepted < 3000 and fast.redacted["employee"] == fast.accepted and fast.errors


def test_a_child_that_cannot_start_or_dies_hands_the_rest_to_the_thread_path(
    sqlite_store, tmp_path, monkeypatch, in_child
):
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\n".join(line({**GOOD, "event_id": f"k{i}", "prompt": f"q {i}"}) for i in range(3000)))
    ctx = multiprocessing.get_context("spawn")

    class NoStart(type(ctx)):  # e.g. a daemonic parent, which may not have children
        def Process(self, *a, **kw):  # noqa: N802 - the name multiprocessing gives it
            p = ctx.Process(*a, **kw)
            p.start = lambda: (_ for _ in ()).throw(AssertionError("daemonic processes are not allowed"))
            return p

    with monkeypatch.context() as m:
        m.setattr(multiprocessing, "get_context", lambda method=None: NoStart())
        r = ingest_files(sqlite_store, [path], batch_lines=100)
    assert in_child == ["fallback"] and (r.read, r.accepted) == (3000, 3000)

    killed: list[int] = []

    def kill_child(_done: int, _total: int) -> None:  # after the first committed block
        for p in multiprocessing.active_children():
            if p.name == "driftloop-ingest-parse" and not killed:
                os.kill(p.pid, signal.SIGKILL)
                killed.append(p.pid)

    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(path.read_bytes().replace(b'"k', b'"c'))
    r = ingest_files(sqlite_store, [copy], batch_lines=100, progress=kill_child)
    assert killed and in_child[-1] == "fallback" and (r.read, r.accepted, r.duplicates) == (3000, 3000, 0)
    assert sqlite_store.count_events() == 6000 and ingest_files(sqlite_store, [copy]).read == 0


CHILD = """
import sys
from pathlib import Path
from driftloop.ingest import ingest_files, worker
from driftloop.store import Store
worker.PROCESS_MIN_BYTES, worker.HEAD_START_BYTES = 0, 0
if __name__ == "__main__":
    print("ready", flush=True)
    ingest_files(Store(sys.argv[1]), [Path(sys.argv[2])], batch_lines=200)
"""


def test_sigkill_of_the_parent_ends_the_child_and_the_rerun_loses_and_duplicates_nothing(store_url, tmp_path):
    lines, ids = [], set()
    for i in range(40_000):
        eid = f"e{i % 30_000}"  # a quarter are duplicates
        ids.add(eid)
        lines.append(json.dumps({**GOOD, "event_id": eid, "prompt": f"q {i} mail u{i}@example.com"}))
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(lines) + "\n{bad\n")
    script = tmp_path / "run.py"
    script.write_text(CHILD)
    store = Store(store_url)
    store.migrate()
    parent = subprocess.Popen(
        [sys.executable, str(script), store_url, str(path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert parent.stdout.readline().strip() == b"ready"
    deadline = time.monotonic() + 60
    while parent.poll() is None and store.count_events() == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert parent.poll() is None, "the run finished before it could be killed: make the input larger"
    kids = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert 0 < store.count_events() < len(ids) and kids
    deadline = time.monotonic() + 30  # the child ends on its broken pipe
    while (
        any(Path(f"/proc/{k}").exists() and "Z" not in Path(f"/proc/{k}/stat").read_text().split()[2] for k in kids)
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert time.monotonic() < deadline, "the parse child outlived its killed parent"
    r = ingest_files(store, [path], batch_lines=200)
    assert r.balanced
    with store.engine.connect() as c:
        stored = {x for (x,) in c.execute(text("SELECT event_id FROM feedback"))}
        assert "@example.com" not in " ".join(p for (p,) in c.execute(text("SELECT prompt FROM feedback")))
    assert stored == ids and store.count_quarantine() == 1
    assert ingest_files(store, [path]).read == 0
    store.close()
