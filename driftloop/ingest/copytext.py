"""PostgreSQL COPY text of a parsed block: the writer hands COPY one buffer instead of building rows.

On PostgreSQL the fast path's rows are not built as Python tuples at all.
`copy_block` turns a parsed block (`columnar.block_parts`) into the rows of
COPY's text format (tab-separated, `\\N` for NULL, backslash escapes), with
arrow's string kernels for the columns and Python only for the few rows the
row path or the redactor built. In-block duplicates are dropped here (the
first occurrence of an event id wins, as on every other path), so a COPY
straight into `feedback` fails only on an id stored before; `Store.add_copy`
then takes the staging table and `ON CONFLICT DO NOTHING`.

It runs where the block was parsed, in the parse child or a parser thread,
so the writer only sends bytes to the server.

    >>> block = copy_block(parts)
    >>> block.payload[:40], block.rows, block.total
    (b'e1\\t2026-10-01 00:00:00.000000+00:00\\t3\\t...', 1987, 2000)
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import numpy as np

    from driftloop.ingest.columnar import BlockParts

NULL = "\\N"
# COPY text: a backslash starts an escape, tab ends a column, newline/CR end a row.
_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
_ESCAPE_TABLE = str.maketrans(dict(_ESCAPES))


class CopyBlock(NamedTuple):
    """COPY text rows of one block (EVENT_COLUMNS order) and the counts the writer reports."""

    payload: bytes  # rows with distinct event ids, the first occurrence of each
    rows: int  # rows in `payload`
    total: int  # rows of the block that parsed: `rows` plus the in-block duplicates


def cell(v: Any) -> str:
    """One value as COPY text (PostgreSQL reads it back as the same value)."""
    if v is None:
        return NULL
    if isinstance(v, str):
        return v.translate(_ESCAPE_TABLE) if ("\\" in v or "\t" in v or "\n" in v or "\r" in v) else v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # the shortest text that reads back as the same double
    if isinstance(v, datetime):
        return v.isoformat(" ")  # aware: PostgreSQL keeps the instant
    return str(v)


def line(row: tuple) -> str:
    """One row as a line of COPY text."""
    return "\t".join(map(cell, row)) + "\n"


def copy_block(parts: "BlockParts") -> CopyBlock:
    """The COPY text of a parsed block's rows: in-block duplicates dropped, the first one kept."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    # Event ids and line numbers of every row, table by table, then the row path's rows.
    lines: list[int] = []
    ids: list[str] = []
    for idx, got in parts.fast:
        got_ids = got.cols[0].to_pylist()
        for j, row in got.fixed.items():
            got_ids[j] = row[0]
        lines += idx
        ids += got_ids
    for i, row in parts.slow:
        lines.append(i)
        ids.append(row[0])
    total = len(ids)
    keep = _first_of_each(np.asarray(lines, dtype=np.int64), ids)

    chunks: list[bytes] = []
    tail = [pa.scalar("{}"), pa.scalar(cell(parts.source)), pa.scalar(cell(parts.now_value) + "\n")]
    at = 0
    for idx, got in parts.fast:
        mine = keep[at:at + len(idx)]
        at += len(idx)
        fixed = [row for j, row in got.fixed.items() if mine[j]]
        if fixed:  # the rows Python built, as arrays of the same types
            mine = mine.copy()
            mine[list(got.fixed)] = False
            cols = [pa.array(v, type=c.type) for v, c in zip(zip(*fixed), got.cols)]
            chunks.append(_arrow_lines(cols, tail, plain=False))
        if mine.all():
            chunks.append(_arrow_lines(got.cols, tail, got.plain))
        elif mine.any():
            take = pa.array(mine)
            chunks.append(_arrow_lines([pc.filter(c, take) for c in got.cols], tail, got.plain))
    slow = "".join(line(row) for (_, row), k in zip(parts.slow, keep[at:]) if k)
    if slow:
        chunks.append(slow.encode())
    return CopyBlock(b"".join(chunks), int(keep.sum()), total)


def _first_of_each(lines: "np.ndarray", ids: list[str]) -> "np.ndarray":
    """Mask of the rows that hold the first occurrence (lowest line number) of their id."""
    import numpy as np

    n = len(ids)
    order = np.argsort(lines, kind="stable")
    in_order = [ids[k] for k in order.tolist()]
    first = dict(zip(reversed(in_order), range(n - 1, -1, -1)))  # the lowest position wins
    if len(first) == n:
        return np.ones(n, dtype=bool)
    keep = np.empty(n, dtype=bool)
    keep[order] = np.fromiter(map(first.__getitem__, in_order), dtype=np.int64, count=n) == np.arange(n)
    return keep


def _arrow_lines(cols: list[Any], tail: list[Any], plain: bool) -> bytes:
    """COPY text lines of the columns (pyarrow arrays) followed by the constant `tail` cells.

    `plain`: no string holds a backslash, tab, CR or line feed, so none needs an escape.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    text = []
    for c in cols:
        if c.type != pa.string():
            c = pc.cast(c, pa.string())  # floats: the shortest round-trip text; booleans: true/false
        elif not plain and pc.any(pc.match_substring_regex(c, "[\\\\\t\n\r]")).as_py():
            for old, new in _ESCAPES:  # the backslash first, so no escape is escaped twice
                c = pc.replace_substring(c, old, new)
        text.append(c)
    out = pc.binary_join_element_wise(*text, *tail, "\t", null_handling="replace", null_replacement=NULL)
    if isinstance(out, pa.ChunkedArray):
        out = out.combine_chunks()
    offsets = np.frombuffer(out.buffers()[1], dtype=np.int32, count=len(out) + 1, offset=out.offset * 4)
    return out.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]]
