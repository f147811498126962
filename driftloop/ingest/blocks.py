"""Blocks of CSV and Parquet rows for the columnar fast path (`tabular.py`), as the row path reads them.

A CSV block holds the lines of up to CSV_GROUP batches. While every line is a
plain single-line record (cells unquoted, or quoted with doubled quotes
inside, no control character, no line break in a cell) Python's csv module
and arrow's CSV reader split it alike, so arrow reads the block's ASCII
lines of the header's field count in one call (`table`); any other plain
line is read alone by the csv module, as `files._csv_records` reads it
(`rows`). The first line that is not plain raises NotPlain after the blocks
before it: the row path reads on from there. A Parquet block is up to GROUP
batches of rows. `cuts` says where each batch of the block ends, so that
each commits with its own checkpoint.

    >>> for block in csv_blocks(stream, header, offset, 0, 2000, MAX_LINE_BYTES):
    ...     block.records, block.cuts[0]
    (4000, (2000, 731442, 2000))
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from driftloop.ingest.lines import READ_BYTES
from driftloop.ingest.rows import RowError

if TYPE_CHECKING:
    import pyarrow as pa

GROUP = 2  # batches parsed together: arrow's cost per call is paid once for both (more: more memory)
CSV_GROUP = 4  # CSV lines are smaller in memory than Parquet's batches: 4 (measured, 1M rows: 10.7-10.9 s, child 249 MB; 2: 11.6-11.7 s, 207 MB)

_CELL = rb'(?:"(?:[^"\x00-\x08\x0a-\x1f]|"")*"|[^",\x00-\x08\x0a-\x1f\x7f]*)'
SIMPLE_LINE = re.compile(rb"(?:" + _CELL + rb"(?:," + _CELL + rb")*)\r?\n?")  # one plain CSV record
_ODD_CHARS = [bytes([c]) for c in b'"' + bytes(range(0x09)) + b"\x0b\x0c" + bytes(range(0x0E, 0x20)) + b"\x7f"]
# ... what only some plain lines hold
_LINE = re.compile(rb"[^\n]*\n")


class NotPlain(EOFError):
    """A CSV line the fast path does not split (a quoted line break, a stray quote): as after a read
    error, the row path reads on from the last committed block."""


class TableBlock(NamedTuple):
    """Up to a batch of records: the rows arrow reads at `fast` positions, the rest as the row path reads them."""

    table: Any  # pa.Table of the rows at `fast`, in the source's own columns, or None
    fast: list[int]
    rows: dict[int, Any]  # position -> (decoded row or RowError, raw text) for rows not in `table`
    raw: Callable[[int], tuple[Any, str]]  # a `fast` row as the row path reads it (for one that fails a check)
    numbers: list[int]  # line (CSV) or row (Parquet) number of each position
    records: int
    end: int  # checkpoint position after the block
    kind: str  # "csv" or "parquet"
    plain: bool  # no backslash, tab or stray CR in the CSV lines
    cuts: list[tuple[int, int, int]]  # per batch: (first position after it, checkpoint position, records)


# ---------------------------------------------------------------------- CSV
def csv_header(stream: BinaryIO, max_line: int) -> tuple[list[str], int] | None:
    """(header as the row path reads it, offset after it), or None when the fast path cannot take the file."""
    stream.seek(0)
    line = stream.readline(max_line + 1)
    if not line or not SIMPLE_LINE.fullmatch(line.removeprefix(b"\xef\xbb\xbf")):
        return None
    try:
        header = next(csv.reader([line.decode("utf-8")]))
    except (UnicodeDecodeError, StopIteration, csv.Error):
        return None
    header = [h.lstrip("\ufeff").strip() for h in header]
    if len(set(header)) != len(header) or "" in header:
        return None
    return header, len(line)


def csv_blocks(
    stream: BinaryIO,
    header: list[str],
    offset: int,
    number: int,
    batch_lines: int,
    max_line: int,
    group: int = CSV_GROUP,
) -> Iterator[TableBlock]:
    """Blocks of `batch_lines` lines read from byte `offset` (`number` lines before it); raises NotPlain at
    a line the fast path does not split, after yielding the blocks before it."""
    pending, pos, carry = b"", offset, []
    while True:
        data = stream.read(READ_BYTES)
        if data:
            buf = pending + data
            cut = buf.rfind(b"\n") + 1
            carry += _LINE.findall(buf, 0, cut)  # each line with its "\n" (2.7x a split and a concatenation)
            pending = buf[cut:]
            if len(pending) > max_line:
                carry.append(pending)  # not plain: ends the fast path there
                pending = b""
        elif pending:
            carry.append(pending)
            pending = b""
        size = batch_lines * group
        while len(carry) >= size or (carry and not data):
            chunk, carry = carry[:size], carry[size:]
            good, joined = _plain_prefix(chunk, max_line)
            block, pos, number = _csv_block(chunk[:good], header, pos, number, batch_lines, joined)
            if block is not None:
                yield block
            if good < len(chunk):
                raise NotPlain(pos)
        if not data:
            return


def _plain_prefix(chunk: list[bytes], max_line: int) -> tuple[int, bytes | None]:
    """How many lines at the start of `chunk` are plain single-line records, and the joined chunk where all are."""
    buf = b"".join(chunk)
    # One C scan per character (memchr) is several times faster than a regex over the buffer.
    if (
        not any(c in buf for c in _ODD_CHARS)
        and buf.count(b"\r") == buf.count(b"\r\n")
        and max(map(len, chunk), default=0) <= max_line
    ):
        return len(chunk), buf  # no quote, no control character, CR only before LF: every line is plain
    for i, line in enumerate(chunk):
        if len(line) > max_line or not SIMPLE_LINE.fullmatch(line):
            return i, None
    return len(chunk), buf


def _csv_block(
    chunk: list[bytes], header: list[str], pos: int, number: int, batch_lines: int, joined: bytes | None = None
) -> tuple[TableBlock | None, int, int]:
    """The block of `chunk` (plain lines) from byte `pos` with `number` lines before it; the new pos and number.

    `joined` is `b"".join(chunk)` where the caller has it."""
    numbers: list[int] = []
    kept: list[bytes] = []
    ends: list[int] = []  # stream offset after each kept line
    if joined is None:
        joined = b"".join(chunk)
    if chunk and all(map(bytes.strip, chunk)):  # no blank line (ASCII whitespace only): every line is kept
        kept, numbers = chunk, list(range(number + 1, number + len(chunk) + 1))
        ends = list(itertools.accumulate(map(len, chunk), initial=pos))[1:]
        number, pos, buf = numbers[-1], ends[-1], joined
    else:
        at = pos
        for line in chunk:
            number += 1
            at += len(line)
            if line.strip():
                kept.append(line)
                numbers.append(number)
                ends.append(at)
        pos = at
        buf = b"".join(kept)
    if not kept:
        return None, pos, number
    where = list(range(len(kept))) if buf.isascii() else [i for i, x in enumerate(kept) if x.isascii()]
    fast: list[int] = []
    table = None
    if where and len(header) > 1:  # one column: a quoted empty cell is a blank line to the csv module
        # Arrow reads the ASCII lines; a ragged one (too few or too many fields) is left to the row path.
        read = _read_csv(b"".join(kept[i] for i in where) if len(where) < len(kept) else buf, header)
        if read is not None:
            table, ragged = read
            skip = {where[n - 1] for n in ragged}
            fast = [i for i in where if i not in skip]
            if table.num_rows != len(fast):
                table, fast = None, []
    taken = set(fast)
    rows = {i: _csv_row(kept[i], header) for i in range(len(kept)) if i not in taken}
    blank = [i for i, r in rows.items() if r is None]  # a record the csv module reads as a blank line
    for i in blank:
        del rows[i]
    plain = b"\\" not in buf and b"\t" not in buf and buf.count(b"\r") == buf.count(b"\r\n")
    gone = set(blank)
    cuts = []
    for lo in range(0, len(kept), batch_lines):
        hi = min(lo + batch_lines, len(kept))
        real = [i for i in range(lo, hi) if i not in gone]
        if real:  # as the row path: a batch ends after its last record, blank lines after it are read again
            cuts.append((hi, ends[real[-1]], len(real)))
    block = TableBlock(
        table,
        fast,
        rows,
        lambda i: _csv_row(kept[i], header) or (RowError("(row)", "blank"), ""),  # never blank: see above
        numbers,
        len(kept) - len(blank),
        pos,
        "csv",
        plain,
        cuts,
    )
    return block, pos, number


def _csv_row(line: bytes, header: list[str]) -> tuple[Any, str] | None:
    """One plain line as `files._csv_records` reads it: (row or RowError, raw text), None for a blank record."""
    try:
        text, bad = line.decode("utf-8"), False
    except UnicodeDecodeError:
        text, bad = line.decode("utf-8", "replace"), True
    try:
        row = next(csv.reader([text], strict=False))
    except StopIteration:
        return None
    if not row or (len(row) == 1 and not row[0].strip()):
        return None
    if bad:
        return RowError("(row)", "invalid UTF-8"), text
    if len(row) != len(header):
        return RowError("(row)", "ragged CSV row", f"{len(row)} fields, header has {len(header)}"), text
    return dict(zip(header, row)), text


def _read_csv(buf: bytes, header: list[str]) -> tuple[pa.Table, list[int]] | None:
    """Arrow's table of the plain lines in `buf` and the 1-based numbers of the lines it skipped as
    ragged (a field count other than the header's); None where arrow refuses the buffer."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    ragged: list[int] = []

    def skip(row: Any) -> str:
        ragged.append(row.number)
        return "skip"

    try:
        t = pcsv.read_csv(
            io.BytesIO(buf),
            read_options=pcsv.ReadOptions(column_names=header, use_threads=False, block_size=len(buf) + 1),
            parse_options=pcsv.ParseOptions(
                newlines_in_values=False, ignore_empty_lines=False, invalid_row_handler=skip
            ),
            convert_options=pcsv.ConvertOptions(
                column_types={h: pa.string() for h in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if None in ragged or len(ragged) + t.num_rows != buf.count(b"\n") + (not buf.endswith(b"\n")):
        return None  # a skipped line without its number, or lines arrow did not count as rows
    return t, ragged


# ------------------------------------------------------------------ Parquet
def parquet_blocks(path: Path, start: int, batch_lines: int, group: int = GROUP) -> Iterator[TableBlock]:
    """Blocks of `group` batches of `batch_lines` rows (the last may be smaller) after the first `start` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, pre_buffer=False)  # read as needed: less memory held
    n, held, have = 0, [], 0
    size = batch_lines * group
    for batch in pf.iter_batches(batch_size=batch_lines, use_threads=False):
        if n + batch.num_rows <= start:
            n += batch.num_rows
            continue
        if n < start:
            batch = batch.slice(start - n)
            n = start
        held.append(batch)
        have += batch.num_rows
        while have >= size:
            t = pa.Table.from_batches(held)
            yield _parquet_block(t.slice(0, size), n, batch_lines)
            n += size
            held = t.slice(size).to_batches()
            have -= size
    if have:
        yield _parquet_block(pa.Table.from_batches(held), n, batch_lines)


def _parquet_block(t: pa.Table, n: int, batch_lines: int) -> TableBlock:
    m = t.num_rows
    cuts = [
        (min(lo + batch_lines, m), n + min(lo + batch_lines, m), min(batch_lines, m - lo))
        for lo in range(0, m, batch_lines)
    ]

    def raw(i: int) -> tuple[Any, str]:
        row = t.slice(i, 1).to_pylist()[0]
        return row, json.dumps(row, default=str, ensure_ascii=False)

    return TableBlock(t, list(range(m)), {}, raw, list(range(n + 1, n + m + 1)), m, n + m, "parquet", False, cuts)
