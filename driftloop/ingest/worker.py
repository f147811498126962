"""The writer's side of the columnar fast path: parsing runs beside the writes, in threads or a child process.

`ingest_stream` parses the next blocks in two threads while this thread
writes the current one. pyarrow and SQLite release the GIL for their own
work, but the Python row building, the redaction and the driver's per-row
binding all need it, so threads overlap little. A file with at least
PROCESS_MIN_BYTES left to read is therefore parsed by a child process
(`ingest_in_process`; `spawn`, safe beside threads): it reads and parses the
blocks exactly as a thread would (`columnar.block_parts`) and sends each
block's columns (the store's `EventColumns`), quarantine rows and counts
through a pipe; this process writes them with `Store.write_batch`, each
block with its checkpoint, in input order, and the store turns the columns
into Python rows (SQLite) or COPY text (PostgreSQL) here. Parsing is the
larger share, so the formatting stays here: on PostgreSQL that measured
0.56x raw COPY against 0.49x with the COPY text built in the child
(benchmarks/ingest.py). The thread path has the store format each block in
its parser thread (`Store.prepare`). The child writes nothing, so a SIGKILL
of either process loses nothing: the next run resumes after the last
committed block. Whatever keeps the child from working (no `spawn`, a
daemonic parent, a crash) hands the rest to the threads.

    >>> status, offset = ingest_in_process(store, path, start, parser, source, key, position, fr, reasons,
    ...                                    2000, MAX_LINE_BYTES, 64 * 1024, progress=None)
    >>> status   # "done", "read_error" (row path from offset) or "fallback" (threads from offset)
    'done'
    >>> ingest_stream(store, stream, offset, parser, source, key, position, fr, reasons,
    ...               2000, MAX_LINE_BYTES, 64 * 1024, progress=None) is None   # else: row path from there
    True
"""

from __future__ import annotations

import io
import os
import queue
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from driftloop.store.batch import Batch, Checkpoint

if TYPE_CHECKING:
    from driftloop.ingest.pipeline import FileReport, RowParser
    from driftloop.store import Store

PROCESS_MIN_BYTES = 64 * 1024 * 1024  # bytes left to read: below, a child's start-up (~1 s) does not pay
PARSE_THREADS = 2  # blocks parsed at once while the writer writes (this machine class has 2 cores)
PIPE_BYTES = 1 << 20  # the parse child's pipe buffer where the OS allows it (Linux's default maximum)
AHEAD_BLOCKS = 4  # parsed blocks the child may send ahead of the writes (bounded memory)
HEAD_START_BYTES = 8 * 1024 * 1024  # ingested here, in threads, while the child starts up (~0.7 s)


def process_ok(path: Path, start: int) -> bool:
    """True when `path` has PROCESS_MIN_BYTES on disk after `start` and this machine has 2+ cores."""
    return (os.cpu_count() or 1) >= 2 and path.stat().st_size - start >= PROCESS_MIN_BYTES


def _widen(conn: Any) -> None:
    """Give the pipe PIPE_BYTES of buffer where the OS allows it (Linux: F_SETPIPE_SZ), else leave it.

    A parsed batch is several hundred KB. Through a 64 KB pipe the pump thread reads it in many
    pieces, and between two pieces it waits for the GIL, which the writer thread holds while it
    encodes rows: the child then waits in send() and the writer for the next batch.
    """
    try:
        import fcntl

        fcntl.fcntl(conn.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError, ValueError):
        pass


# ---------------------------------------------------------------- threads
def ingest_stream(
    store: Store,
    stream: BinaryIO,
    start: int,
    parser: RowParser,
    source: str,
    key: str,
    position: Callable[[int], str],
    fr: FileReport,
    reasons: Counter[str],
    batch_lines: int,
    max_line: int,
    keep: int,
    progress: Callable[[], None] | None,
    number: int = 0,
    table_blocks: Iterator[Any] | None = None,
    parts: Callable[..., list[Any]] | None = None,
) -> int | None:
    """Ingest one JSONL stream from byte `start`: each block of lines commits with its checkpoint.

    `position(offset)` is the checkpoint text; `max_line` and `keep` are the
    over-long line limit and what of such a line the quarantine keeps (bytes);
    `number` the number of lines before `start` (quarantine rows keep their line).
    `table_blocks` and `parts` (CSV and Parquet, `tabular.py`) replace the JSONL
    blocks read from `stream` and `columnar.block_parts`.

    Two parser threads parse the next blocks while this thread writes the
    current one, in order: pyarrow and SQLite release the GIL for their own
    work, so parsing and writing overlap on two cores. Each block is parsed
    with its own redaction and reason counts, added here in input order.
    Returns None when the stream was read to its end, else the offset after
    the last committed block, for the row path to go on from when a read
    error (OSError, a corrupt gzip) stopped the fast path.
    """
    import queue
    import threading
    from concurrent.futures import Future, ThreadPoolExecutor

    from driftloop.ingest.columnar import block_parts
    from driftloop.ingest.lines import jsonl_blocks

    blocks: queue.Queue[Any] = queue.Queue(maxsize=4)  # blocks read ahead, in order: bounded memory
    stop = threading.Event()
    read_error = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                blocks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def parse(block: Any) -> tuple:
        own = parser.fork()
        part: Counter[str] = Counter()
        if parts is None:
            events, quarantine = block_parts(block, own, source, part)
            subs: list[Any] = [(block.end, len(block.lines), events, quarantine)]
        else:  # a block of several batches, each committed with its own checkpoint
            subs = parts(block, own, source, part)
        batches = [
            (end, n, store.prepare(Batch(source, ev, q, Checkpoint(key, position(end)), parser.id_namespace)))
            for end, n, ev, q in subs
        ]
        return batches, part, own.redactor.counts

    pool = ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="driftloop-ingest-parse")

    def read() -> None:
        try:
            source_blocks = (
                table_blocks
                if table_blocks is not None
                else jsonl_blocks(stream, start, batch_lines, max_line, keep, number)
            )
            for block in source_blocks:
                if not put(pool.submit(parse, block)):
                    return
            put(None)
        except (OSError, EOFError, zlib.error):
            put(read_error)
        except BaseException as e:  # handed to the writer, which raises it
            put(e)

    reader = threading.Thread(target=read, name="driftloop-ingest-read", daemon=True)
    reader.start()
    committed = start
    try:
        while True:
            item = blocks.get()
            if item is None:
                return None
            if item is read_error:
                return committed
            if not isinstance(item, Future):
                raise item
            batches, part, redacted = item.result()
            for end, n, batch in batches:
                accepted, dups = store.write_batch(batch)
                fr.read += n
                fr.accepted += accepted
                fr.duplicates += dups
                fr.quarantined += len(batch.quarantine)
                committed = end
                if progress:
                    progress()
            reasons.update(part)
            parser.redactor.counts.update(redacted)
    finally:
        stop.set()
        reader.join()
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- process
def _child(
    conn: Any,
    path: str,
    start: int,
    mapping: Any,
    spec: tuple,
    now: Any,
    namespace: str,
    source: str,
    batch_lines: int,
    max_line: int,
    keep: int,
    number: int,
) -> None:
    """The child: each block's (end offset, lines, events, quarantine, reasons, redactions, disk offset)."""
    from driftloop.ingest.columnar import block_parts
    from driftloop.ingest.lines import jsonl_blocks
    from driftloop.ingest.pipeline import RowParser
    from driftloop.ingest.positions import open_stream
    from driftloop.ingest.redact import Redactor

    class Gone(Exception):
        """The parent closed its end: it failed or was killed, so stop quietly."""

    def put(msg: tuple) -> None:
        try:
            conn.send(msg)
        except OSError:  # BrokenPipeError and kin
            raise Gone from None

    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())  # as `columnar.arrow_on_malloc`, for the child's life
    redactor = Redactor(*spec)
    try:
        with open(path, "rb") as raw:
            stream = open_stream(Path(path), raw)
            stream.seek(start)
            for block in jsonl_blocks(stream, start, batch_lines, max_line, keep, number):
                own = RowParser(mapping, redactor.fork(), now=now, id_namespace=namespace)
                part: Counter[str] = Counter()
                events, quarantine = block_parts(block, own, source, part)
                put(("block", block.end, len(block.lines), events, quarantine, part, own.redactor.counts, raw.tell()))
        put(("end",))
    except Gone:
        pass
    except (OSError, EOFError, zlib.error):
        _quiet(put, ("read_error",))
    except BaseException as e:  # the parent takes the thread path, which raises it with its traceback
        _quiet(put, ("failed", repr(e)[:200]))
    finally:
        conn.close()


def _quiet(put: Callable[[tuple], None], msg: tuple) -> None:
    try:
        put(msg)
    except Exception:  # the parent is gone: nobody to tell
        pass


def ingest_in_process(
    store: Store,
    path: Path,
    start: int,
    parser: RowParser,
    source: str,
    key: str,
    position: Callable[[int], str],
    fr: FileReport,
    reasons: Counter[str],
    batch_lines: int,
    max_line: int,
    keep: int,
    progress: Callable[[int], None] | None,
    plain: BinaryIO | None = None,
    number: int = 0,
    child: tuple[Callable[..., None], tuple] | None = None,
) -> tuple[str, int]:
    """Ingest `path` from byte `start`, parsed by a child process; (status, offset after the last commit).

    Status `done`: read to the end; `read_error`: the stream could not be
    read on (the row path goes on from the offset and reports it);
    `fallback`: the child could not start or failed (the thread path goes on
    from the offset). `progress(disk_offset)` is called after each block.
    `plain`, the file opened uncompressed at `start`, lets this process
    ingest the first HEAD_START_BYTES itself (in threads) while the child
    starts up; the child begins at the first line after them. `child`
    (CSV and Parquet, `tabular.py`) is another child function and its
    arguments after the pipe, sending the same messages.
    """
    import multiprocessing as mp

    head = plain.read(HEAD_START_BYTES) if plain is not None else b""
    head = head[: head.rfind(b"\n") + 1]  # whole lines only: the child starts at the next one
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    _widen(recv)
    target, args = child or (_child, ())
    proc = ctx.Process(
        target=target,
        name="driftloop-ingest-parse",
        daemon=True,
        args=(send, *args)
        if child
        else (
            send,
            str(path),
            start + len(head),
            parser.mapping,
            parser.redactor.spec,
            parser.now,
            parser.id_namespace,
            source,
            batch_lines,
            max_line,
            keep,
            number + head.count(b"\n"),
        ),
    )
    try:
        proc.start()
    except (AssertionError, OSError, RuntimeError):  # e.g. a daemonic parent may not have children
        recv.close()
        send.close()
        return "fallback", start
    send.close()  # the child holds the only write end: EOF here when it exits
    # A thread takes the child's messages off the pipe as they come, so that the child runs a
    # few blocks ahead instead of waiting in send() for every write here.
    inbox: queue.Queue[tuple] = queue.Queue(maxsize=AHEAD_BLOCKS)
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            try:
                msg = recv.recv()
            except (EOFError, OSError):
                msg = ("died",)
            while not stop.is_set():
                try:
                    inbox.put(msg, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if msg[0] != "block":
                return

    pumper = threading.Thread(target=pump, name="driftloop-ingest-recv", daemon=True)
    pumper.start()
    committed = start
    try:
        if head:
            data = io.BytesIO(head)
            ingest_stream(
                store,
                data,
                start,
                parser,
                source,
                key,
                position,
                fr,
                reasons,
                batch_lines,
                max_line,
                keep,
                (lambda: progress(start + data.tell())) if progress else None,
                number,
            )
            committed = start + len(head)
        while True:
            msg = inbox.get()
            if msg[0] == "end":
                return "done", committed
            if msg[0] == "read_error":
                return "read_error", committed
            if msg[0] in ("failed", "died"):  # the thread path goes on from the last commit
                return "fallback", committed
            _, end, n, events, quarantine, part, redacted, disk = msg
            checkpoint = Checkpoint(key, position(end))
            accepted, dups = store.write_batch(Batch(source, events, quarantine, checkpoint, parser.id_namespace))
            reasons.update(part)
            parser.redactor.counts.update(redacted)
            fr.read += n
            fr.accepted += accepted
            fr.duplicates += dups
            fr.quarantined += len(quarantine)
            committed = end
            if progress:
                progress(disk)
    finally:
        stop.set()
        if proc.is_alive():
            proc.kill()  # its end of the pipe closes: the pump's recv() ends
        proc.join()
        pumper.join()
        recv.close()
