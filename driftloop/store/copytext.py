"""PostgreSQL COPY text of column-form events: the store hands COPY one buffer instead of building rows.

On PostgreSQL, events in column form (`batch.EventColumns`) are not built
as Python tuples at all. `copy_block` turns them into the rows of COPY's
text format (tab-separated, `\\N` for NULL, backslash escapes), with arrow's
string kernels for the columns and Python only for the few events given
whole. In-batch duplicates are dropped here (the first occurrence of an
event id wins, as on every other path), so a COPY straight into `feedback`
fails only on an id stored before; the store then takes the staging table
and `ON CONFLICT DO NOTHING`.

It runs wherever `Store.prepare` is called: in the ingestion's parser
thread, so the writer only sends bytes to the server.

    >>> block = copy_block(events, "feedback.jsonl", now, "files:feedback.jsonl")
    >>> block.payload[:40], block.rows, block.total
    (b'e1\\t2026-10-01 00:00:00.000000+00:00\\t3\\t...', 1987, 2000)
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from driftloop.store.batch import EventColumns

if TYPE_CHECKING:
    import numpy as np

NULL = "\\N"
# COPY text: a backslash starts an escape, tab ends a column, newline/CR end a row.
_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
_ESCAPE_TABLE = str.maketrans(dict(_ESCAPES))


class CopyBlock(NamedTuple):
    """COPY text rows of one batch (EVENT_COLUMNS order) and the counts the writer reports."""

    payload: bytes  # rows with distinct event ids, the first occurrence of each
    rows: int  # rows in `payload`
    total: int  # events given: `rows` plus the in-batch duplicates


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


def copy_block(events: EventColumns, source: str, now: Any, namespace: str = "") -> CopyBlock:
    """The COPY text of column-form events: in-batch duplicates dropped, the first one kept.

    `now` is the ingestion time, stored in every row with `source` and the id `namespace`.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from driftloop.store.encode import Constant, event_row, table_columns

    # Event ids and positions of every row, table by table, then the single events.
    positions: list[int] = []
    ids: list[str] = []
    for idx, table in events.tables:
        got_ids = table.columns["event_id"].to_pylist()
        for j, e in table.events.items():
            got_ids[j] = e.event_id
        positions += idx
        ids += got_ids
    for i, e in events.events:
        positions.append(i)
        ids.append(e.event_id)
    total = len(ids)
    keep = _first_of_each(np.asarray(positions, dtype=np.int64), ids)

    chunks: list[bytes] = []
    tail = [pa.scalar(cell(source)), pa.scalar(cell(now)), pa.scalar(cell(namespace) + "\n")]
    given: list[str] = []  # lines of the events given whole
    at = 0
    for idx, table in events.tables:
        mine = keep[at : at + len(idx)]
        at += len(idx)
        if table.events:
            given += [
                line(event_row(e, source, now, "postgresql", namespace)) for j, e in table.events.items() if mine[j]
            ]
            mine = mine.copy()
            mine[list(table.events)] = False
        cols = [pa.scalar(cell(c.value)) if isinstance(c, Constant) else c for c in table_columns(table, "postgresql")]
        if mine.all():
            chunks.append(_arrow_lines(cols, tail, table.plain))
        elif mine.any():
            take = pa.array(mine)
            cols = [c if isinstance(c, pa.Scalar) else pc.filter(c, take) for c in cols]
            chunks.append(_arrow_lines(cols, tail, table.plain))
    given += [
        line(event_row(e, source, now, "postgresql", namespace)) for (_, e), k in zip(events.events, keep[at:]) if k
    ]
    if given:
        chunks.append("".join(given).encode())
    return CopyBlock(b"".join(chunks), int(keep.sum()), total)


def _first_of_each(positions: np.ndarray, ids: list[str]) -> np.ndarray:
    """Mask of the rows that hold the first occurrence (lowest line number) of their id."""
    import numpy as np

    n = len(ids)
    order = np.argsort(positions, kind="stable")
    in_order = [ids[k] for k in order.tolist()]
    first = dict(zip(reversed(in_order), range(n - 1, -1, -1)))  # the lowest position wins
    if len(first) == n:
        return np.ones(n, dtype=bool)
    keep = np.empty(n, dtype=bool)
    keep[order] = np.fromiter(map(first.__getitem__, in_order), dtype=np.int64, count=n) == np.arange(n)
    return keep


def _arrow_lines(cols: list[Any], tail: list[Any], plain: bool) -> bytes:
    """COPY text lines of the columns (pyarrow arrays, or scalars of COPY text) followed by the constant `tail` cells.

    `plain`: no string holds a backslash, tab, CR or line feed, so none needs an escape.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    text = []
    for c in cols:
        if isinstance(c, pa.Scalar):
            text.append(c)
            continue
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
    return out.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]
