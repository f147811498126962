"""The API's group writer: concurrent requests' writes share one transaction, each answered after its commit;
a job that fails loses only its own writes."""

from __future__ import annotations

import asyncio
import threading

from driftloop.app.api.writer import GroupWriter
from driftloop.ingest.pipeline import RowParser
from driftloop.store.batch import Batch, Written


def events(*ids: int) -> list:
    parser = RowParser()
    return [parser.event({"event_id": f"e{i}", "ts": "2026-11-01T10:00:00Z", "prompt": f"q{i}"}, "t") for i in ids]


def test_waiting_jobs_commit_together_and_a_failing_job_loses_only_its_writes(store):
    writer = GroupWriter(store)
    gate = threading.Event()

    def held(conn):  # keeps the writer busy while the next jobs queue up behind it
        gate.wait(10)
        return "first"

    def write(*ids: int):
        return lambda conn: store.write_batch_in(conn, Batch("t", events(*ids), id_namespace="t"))

    def fails(conn):
        store.write_batch_in(conn, Batch("t", events(99), id_namespace="t"))
        raise ValueError("this job fails after writing")

    async def main() -> list:
        first = asyncio.ensure_future(writer.run(held))
        await asyncio.sleep(0.1)
        rest = [asyncio.ensure_future(writer.run(f)) for f in (write(1, 1), fails, write(2), write(1, 3))]
        await asyncio.sleep(0.1)
        gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    try:
        got = asyncio.run(main())
    finally:
        writer.stop()
    assert got[0] == "first"
    assert got[1] == Written(1, 1)  # e1 once, its repeat a duplicate
    assert isinstance(got[2], ValueError)
    assert got[3] == Written(1, 0)
    assert got[4] == Written(1, 1)  # e1 was stored by an earlier job of the same transaction
    assert store.count_events() == 3  # e1, e2, e3; the failed job's e99 rolled back with its savepoint
    assert (writer.groups, writer.jobs) == (2, 5)  # the four queued jobs took one transaction


def test_a_failed_commit_fails_every_job_of_the_group(store, monkeypatch):
    writer = GroupWriter(store)

    def broken():
        raise RuntimeError("database is gone")

    monkeypatch.setattr(store, "write_transaction", broken)

    async def main() -> list:
        jobs = [writer.run(lambda conn, i=i: store.write_batch_in(conn, Batch("t", events(i)))) for i in range(3)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    try:
        got = asyncio.run(main())
    finally:
        writer.stop()
    assert all(isinstance(g, RuntimeError) for g in got) and len(got) == 3
