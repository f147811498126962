"""Worker processes that decode, map and redact OTLP export bodies (`api.traces.parse_workers`).

The API process is one interpreter: its event loop, the thread that parses a
request and the store's writer share one lock, so it uses about one core
however many the machine has. With `parse_workers: N`, the CPU-heavy part of
`POST /v1/traces` (protobuf or JSON decoding, the span mapping, validation and
redaction, the rows' encoding) runs in N processes; the API process keeps
HTTP, the answers and the store writes (group commit, `api.writer`). A
request's body goes to a worker as bytes and comes back as the prepared batch.
A worker that dies (killed, out of memory) fails only the requests it held:
the pool is replaced and those requests are parsed in the API process, so a
client never sees a 5xx for it. A worker whose API process is gone (killed)
exits within a second.

    >>> pool = ParsePool(cfg, store_url, workers=2)
    >>> await pool.start()  # in the app's lifespan
    >>> parsed = await pool.run(body, content_type, content_encoding)  # ParsedSpans | OtlpError | None
    >>> pool.stop()
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

_LOG = logging.getLogger("driftloop.app.api")
PARENT_POLL_S = 1.0  # how often a worker checks that the API process still runs
_WORKER: dict[str, Any] = {}  # in a worker process: its config, parser and store


def _exit_with(parent: int) -> None:
    # A worker outlives a parent that was killed (SIGKILL, OOM): it would wait for work forever.
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(0)


def _start_worker(cfg: Any, store_url: str, parent: int) -> None:
    # `parent` is the API process's id as it gave it: a worker started after that process died
    # (reparented already) sees another parent at once and exits.
    threading.Thread(target=_exit_with, args=(parent,), name="driftloop-parent-watch", daemon=True).start()
    from driftloop.ingest.pipeline import RowParser
    from driftloop.ingest.redact import Redactor
    from driftloop.store import Store

    _WORKER["cfg"] = cfg
    _WORKER["parser"] = RowParser(
        cfg.api.mapping, Redactor.from_config(cfg.redaction), id_namespace=cfg.api.id_namespace
    )
    _WORKER["store"] = Store(store_url)  # for `prepare` (the dialect's row form); never connects


def _ready() -> bool:
    from driftloop.app.api import traces  # noqa: F401  (imported once, before the first request)

    return True


def _parse_in_worker(body: bytes, content_type: str, encoding: str) -> Any:
    from driftloop.app.api.traces import decode_and_parse

    w = _WORKER
    return decode_and_parse(w["cfg"], w["parser"], w["store"], body, content_type, encoding)


class ParsePool:
    """`workers` processes (spawned on the first request) that run `traces.decode_and_parse`."""

    def __init__(self, cfg: Any, store_url: str, workers: int) -> None:
        self.cfg, self.store_url, self.workers = cfg, store_url, workers
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn: the API process runs threads (the event loop's, the writer), which fork would copy mid-step.
                self._pool = ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=(self.cfg, self.store_url, os.getpid()),
                )
            return self._pool

    async def start(self) -> None:
        """Start the workers and wait until each has imported its modules (the first request is not slowed)."""
        pool = self._executor()
        await asyncio.gather(*(asyncio.wrap_future(pool.submit(_ready)) for _ in range(self.workers)))

    async def run(self, body: bytes, content_type: str, encoding: str) -> Any:
        """The request parsed by a worker (`ParsedSpans` or `OtlpError`); None where its worker died."""
        pool = self._executor()
        try:
            return await asyncio.wrap_future(pool.submit(_parse_in_worker, body, content_type, encoding))
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:  # the first request to see it replaces the pool
                    _LOG.warning("API: an OTLP parse worker died; starting new ones")
                    self._pool = None
                    pool.shutdown(wait=False, cancel_futures=True)
            return None

    def stop(self) -> None:
        """End the workers (after the requests they hold)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
