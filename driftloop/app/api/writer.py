"""Group commit for the API's store writes: one writer thread, one transaction for every request waiting.

Requests parse and validate their bodies themselves, then hand the writer a
job (a function of a connection inside a write transaction). The writer takes
every job waiting (up to `max_jobs`), runs each in a savepoint of one write
transaction and commits once; each request gets its job's result only after
that commit, so a 2xx still means every accepted event is stored. A job that
raises rolls back its own savepoint and gets its exception; the others in the
group are unaffected. Concurrent requests never queue for SQLite's write lock
(which its busy handler waits for in sleeps of growing length), and a commit
is paid once per group rather than once per request.

    >>> writer = GroupWriter(store)
    >>> written = await writer.run(lambda conn: store.write_batch_in(conn, batch))
    >>> writer.stop()  # at shutdown: the jobs already queued are written first
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection

from driftloop.store import Store

T = TypeVar("T")
_LOG = logging.getLogger("driftloop.app.api")
MAX_JOBS = 64  # most requests' writes in one transaction


@dataclass
class _Job(Generic[T]):
    fn: Callable[[Connection], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():  # the request went away; its data is committed all the same
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class GroupWriter:
    """The app's single writer to `store` (thread-safe; the thread starts with the first job)."""

    def __init__(self, store: Store, max_jobs: int = MAX_JOBS) -> None:
        self.store = store
        self.max_jobs = max_jobs
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.groups = 0  # transactions committed (or tried)
        self.jobs = 0  # jobs run

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """`fn(conn)` in a savepoint of the next group's transaction; its result once that transaction commits."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="driftloop-api-writer", daemon=True)
                self._thread.start()
            self._queue.put(_Job(fn, loop, future))
        return await future

    def stop(self, timeout: float = 30.0) -> None:
        """Write the jobs queued so far, then end the thread (a later `run` starts a new one)."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._queue.put(None)
        thread.join(timeout)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            stop = False
            while len(jobs) < self.max_jobs:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            self._commit(jobs)
            if stop:
                return

    def _commit(self, jobs: list[_Job[Any]]) -> None:
        results: list[tuple[bool, Any]] = []
        try:
            with self.store.write_transaction() as conn:
                for job in jobs:
                    try:
                        with conn.begin_nested():
                            results.append((True, job.fn(conn)))
                    except Exception as e:  # this job's savepoint is rolled back; the group goes on
                        results.append((False, e))
        except Exception as e:  # BEGIN or COMMIT failed: nothing of the group is stored
            _LOG.warning("API writer: a transaction of %d request(s) failed: %s", len(jobs), e)
            results = [(False, e)] * len(jobs)
        self.groups += 1
        self.jobs += len(jobs)
        for job, (ok, value) in zip(jobs, results):
            try:
                job.loop.call_soon_threadsafe(_settle, job.future, ok, value)
            except RuntimeError:  # the request's event loop is closed: nobody is waiting
                pass
