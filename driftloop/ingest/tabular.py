"""Columnar fast path for CSV and Parquet files: blocks of rows as arrow tables, checked as JSONL blocks are.

Blocks (`blocks.py`: a CSV file's plain lines, a Parquet file's record
batches) are typed (`shapes.typed_cells`, `shapes.typed_columns`), mapped
(`shapes.canonical`) and checked by `columnar._fast_rows`; every row that
does not pass takes the row path (`RowParser.event`), so what is stored and
quarantined, with its line or row number, is what the row path stores. A
block of several batches is parsed at once and written batch by batch, each
with its checkpoint, by the writer of `worker.py` (threads, or a child
process for a big file). The first CSV line the fast path does not split
hands the rest of the file to the row path, from the last commit.

    >>> left = ingest_csv(store, path, stream, 0, parser, source, key, position, fr, reasons, 2000,
    ...                   MAX_LINE_BYTES, progress=None)
    >>> left is None   # else: the row path goes on from byte `left`
    True
"""

from __future__ import annotations

import io
import os
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from driftloop.ingest import columnar, shapes
from driftloop.ingest.blocks import TableBlock, csv_blocks, csv_header, parquet_blocks
from driftloop.ingest.lines import count_lines
from driftloop.ingest.rows import RowError

if TYPE_CHECKING:
    import pyarrow as pa

    from driftloop.ingest.pipeline import FileReport, RowParser
    from driftloop.store import Store
    from driftloop.store.batch import EventColumns, QuarantineRow

Part = tuple[int, int, "EventColumns", "list[QuarantineRow]"]  # (checkpoint position, records, events, quarantine)


# ------------------------------------------------------------------- parsing
def table_batches(block: TableBlock, parser: RowParser, source: str, reasons: Counter[str]) -> list[Part]:
    """A block's batches: (checkpoint position, records, events in the store's column form, quarantine rows)."""
    from driftloop.store.batch import EventColumns, EventTable

    events, quarantine, where = table_parts(block, parser, source, reasons)
    if len(block.cuts) == 1:
        return [(block.cuts[0][1], block.records, events, quarantine)]
    out: list[Part] = []
    lo = 0
    for hi, end, n in block.cuts:
        tables = []
        for idx, t in events.tables:
            a, b = bisect_left(idx, lo), bisect_left(idx, hi)
            if b > a:
                cols = {k: _compact(v.slice(a, b - a)) for k, v in t.columns.items()}
                fixed = {j - a: e for j, e in t.events.items() if a <= j < b}
                tables.append((idx[a:b], EventTable(cols, fixed, t.plain)))
        single = [(i, e) for i, e in events.events if lo <= i < hi]
        q = [r for r, i in zip(quarantine, where) if lo <= i < hi]
        out.append((end, n, EventColumns(tables, single), q))
        lo = hi
    return out


def _compact(a: Any) -> Any:
    """A slice with buffers of its own: a slice pickles (to the writer process) with its whole parent's."""
    import pyarrow as pa

    return pa.concat_arrays(a.chunks if isinstance(a, pa.ChunkedArray) else [a])


def table_parts(
    block: TableBlock, parser: RowParser, source: str, reasons: Counter[str]
) -> tuple[EventColumns, list[QuarantineRow], list[int]]:
    """A block's events in the store's column form (positions: records), its quarantine rows and their positions."""
    import pyarrow as pa

    from driftloop.store.batch import EventColumns

    slow: list[int] = []
    fast_parts: list[Any] = []
    if block.table is not None and block.fast:
        try:
            got = _fast(block, parser, slow)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            got, slow = None, list(block.fast)
        if got is not None:
            fast_parts.append(got)
    records = dict(block.rows)
    for j in slow:
        records[j] = block.raw(j)
    quarantine: list[QuarantineRow] = []
    where: list[int] = []
    slow_events = []
    for i in sorted(records):
        obj, raw = records[i]
        try:
            if isinstance(obj, RowError):
                raise obj
            slow_events.append((i, parser.event(obj, source)))
        except RowError as e:
            reasons[e.key] += 1
            quarantine.append(parser.quarantine(raw, e, source, block.numbers[i]))
            where.append(i)
    return EventColumns(fast_parts, slow_events), quarantine, where


def _fast(block: TableBlock, parser: RowParser, slow: list[int]) -> tuple[list[int], Any] | None:
    t = block.table
    shaped = shapes.typed_cells(t) if block.kind == "csv" else _ok_all(shapes.typed_columns(t))
    if shaped is not None:
        canon = shapes.canonical(shaped[0], parser.mapping)
        if canon is not None:
            import pyarrow.compute as pc

            shaped = canon[0], pc.and_(shaped[1], canon[1])
        else:
            shaped = None
    pre, table = shapes.prepared(shaped, parser.mapping.rating_scale, True, True, block.plain)
    if pre is None or table is None:
        slow.extend(block.fast)
        return None
    redactor = parser.redactor
    idx, got = columnar._fast_rows(
        None,  # type: ignore[arg-type]
        block.fast,
        table,
        parser.now or datetime.now(UTC),
        redactor.enabled and redactor.screen is None,
        redactor.enabled and redactor.screen is columnar.might_match,
        redactor,
        parser.id_namespace,
        slow,
        (parser.mapping.segment_max_keys, parser.mapping.segment_value_max_chars),
        pre,
    )
    return (idx, got) if got is not None else None


def _ok_all(t: pa.Table | None) -> tuple[pa.Table, Any] | None:
    import pyarrow as pa

    return None if t is None else (t, pa.array([True] * t.num_rows, pa.bool_()))


# ------------------------------------------------------------------- driving
def ingest_blocks(
    store: Store,
    blocks: Iterator[TableBlock],
    start: int,
    parser: RowParser,
    source: str,
    key: str,
    position: Callable[[int], str],
    fr: FileReport,
    reasons: Counter[str],
    progress: Callable[[], None] | None,
) -> int | None:
    """Write each block with its checkpoint (parsed in threads beside the writes); None at the end,
    else the position after the last committed block (a line the fast path does not split, a read error)."""
    from driftloop.ingest import worker

    return worker.ingest_stream(
        store,
        io.BytesIO(),
        start,
        parser,
        source,
        key,
        position,
        fr,
        reasons,
        0,
        0,
        0,
        progress,
        table_blocks=blocks,
        parts=table_batches,
    )


def ingest_csv(
    store: Store,
    path: Path,
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
    progress: Callable[[int], None] | None,
) -> int | None:
    """Ingest a CSV stream from byte `start` (0: after the header) on the fast path; None when read to the end,
    else the offset the row path reads on from (a file or a line the fast path does not take).

    A big file (`worker.process_ok`) is parsed by a child process while this one writes.
    """
    from driftloop.ingest import worker

    got = csv_header(stream, max_line)
    if got is None:
        return start
    header, header_end = got
    begin = max(start, header_end)
    number = count_lines(stream, begin)
    rest = stream.read(64 * 1024)
    stream.seek(begin)
    if rest.strip():
        _check_mapped(parser, header, source, bool(start), True)
    if worker.process_ok(path, begin):
        args = ("csv", str(path), begin, header, number, *_parser_args(parser, source, batch_lines, max_line))
        status, at = worker.ingest_in_process(
            store, path, begin, parser, source, key, position, fr, reasons, batch_lines, max_line, 0, progress,
            child=(_table_child, args),
        )  # fmt: skip
        if status != "fallback":
            return None if status == "done" else at
        begin = at
        number = count_lines(stream, begin)
    blocks = csv_blocks(stream, header, begin, number, batch_lines, max_line)
    tell = (lambda: progress(stream.tell())) if progress else None
    return ingest_blocks(store, blocks, begin, parser, source, key, position, fr, reasons, tell)


PROCESS_MIN_ROWS = 200_000  # rows left in a Parquet file from which a child process parses it


def ingest_parquet(
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
    progress: Callable[[int], None] | None,
) -> int | None:
    """Ingest a Parquet file after its first `start` rows on the fast path; None when read to the end, else
    the row the row path reads on from. A big file is parsed by a child process while this one writes."""
    import pyarrow.parquet as pq

    from driftloop.ingest import worker

    pf = pq.ParquetFile(path)
    left = pf.metadata.num_rows - start
    if left > 0:
        _check_mapped(parser, pf.schema_arrow.names, source, bool(start), left >= batch_lines)
    if left >= PROCESS_MIN_ROWS and (os.cpu_count() or 1) >= 2:
        args = ("parquet", str(path), start, [], 0, *_parser_args(parser, source, batch_lines, 0))
        status, at = worker.ingest_in_process(
            store, path, start, parser, source, key, position, fr, reasons, batch_lines, 0, 0, progress,
            child=(_table_child, args),
        )  # fmt: skip
        if status != "fallback":
            return None if status == "done" else at
        start = at
    blocks = parquet_blocks(path, start, batch_lines)
    return ingest_blocks(store, blocks, start, parser, source, key, position, fr, reasons, None)


def _parser_args(parser: RowParser, source: str, batch_lines: int, max_line: int) -> tuple:
    return (parser.mapping, parser.redactor.spec, parser.now, parser.id_namespace, source, batch_lines, max_line)


def _table_child(
    conn: Any,
    kind: str,
    path: str,
    start: int,
    header: list[str],
    number: int,
    mapping: Any,
    spec: tuple,
    now: Any,
    namespace: str,
    source: str,
    batch_lines: int,
    max_line: int,
) -> None:
    """The child process of a CSV or Parquet file: sends each block's parts as `worker._child` does."""
    import zlib

    import pyarrow as pa

    from driftloop.ingest.pipeline import RowParser
    from driftloop.ingest.positions import open_stream
    from driftloop.ingest.redact import Redactor

    pa.set_memory_pool(pa.system_memory_pool())  # as `columnar.arrow_on_malloc`, for the child's life
    redactor = Redactor(*spec)
    try:
        with open(path, "rb") as raw:
            if kind == "csv":
                stream = open_stream(Path(path), raw)
                stream.seek(start)
                blocks = csv_blocks(stream, header, start, number, batch_lines, max_line)
            else:
                blocks = parquet_blocks(Path(path), start, batch_lines)
            for block in blocks:
                own = RowParser(mapping, redactor.fork(), kind == "csv", now, kind == "parquet", namespace)
                part: Counter[str] = Counter()
                for j, (end, n, events, quarantine) in enumerate(table_batches(block, own, source, part)):
                    counts = (part, own.redactor.counts) if j == 0 else (Counter(), Counter())
                    conn.send(("block", end, n, events, quarantine, *counts, raw.tell()))
        conn.send(("end",))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone: nobody to tell
    except (OSError, EOFError, zlib.error):  # NotPlain too: the row path reads on from the last commit
        _tell(conn, ("read_error",))
    except BaseException as e:  # the parent takes the thread path, which raises it with its traceback
        _tell(conn, ("failed", repr(e)[:200]))
    finally:
        conn.close()


def _tell(conn: Any, msg: tuple) -> None:
    try:
        conn.send(msg)
    except OSError:  # the parent is gone
        pass


def _check_mapped(parser: RowParser, names: list[str], source: str, resumed: bool, full: bool) -> None:
    """Raise ConfigError, as `files.run_batches` does, for a mapped field that is not a column."""
    from driftloop.core.errors import ConfigError
    from driftloop.ingest.mapping import unmapped

    typo = unmapped(parser.mapping, [dict.fromkeys(names)], resumed=resumed, full=full)
    if typo:
        raise ConfigError(f"{source}: {typo}; nothing was stored")


def check_first_block(
    stream: BinaryIO, start: int, parser: RowParser, source: str, batch_lines: int, max_line: int
) -> None:
    """Raise ConfigError, as `files.run_batches` does, for a mapped field that no row of a JSONL stream's first
    batch (from byte `start`) holds; the stream is left at `start`."""
    from driftloop.core.errors import ConfigError
    from driftloop.ingest.files import json_object
    from driftloop.ingest.lines import jsonl_blocks
    from driftloop.ingest.mapping import unmapped

    m = parser.mapping
    if not (m.fields or m.segment_fields):
        return
    block = next(jsonl_blocks(stream, start, batch_lines, max_line, 0), None)
    stream.seek(start)
    if block is None:
        return
    rows = []
    for line in block.lines:
        try:
            obj = json_object(line)
        except RowError:
            continue
        if isinstance(obj, dict):
            rows.append(obj)
    typo = unmapped(m, rows, resumed=bool(start), full=len(block.lines) >= batch_lines)
    if typo:
        raise ConfigError(f"{source}: {typo}; nothing was stored")
