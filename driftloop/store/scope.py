"""Event ids are unique within their source's id namespace; ids stored before that stay taken everywhere.

The feedback table's key is (id_namespace, event_id): the same explicit id
from two sources (a file export and an HTTP client, say) is two events, so no
source can pre-empt another's ids. Rows stored before the namespace was
recorded (migration 0006) have the namespace ''; which source wrote them is
unknown, so their ids count as taken in every namespace, as they did then,
and an upgrade never stores an old event again. `Store.write_batch` drops
such ids from a batch (`drop_unscoped`) only where the store holds any such
row at all (`has_unscoped`, one seek on the key).

    >>> if has_unscoped(conn):
    ...     rows, n = drop_unscoped(conn, rows)
"""

from __future__ import annotations

import re
from typing import Any

# Which of the given ids a row stored before namespaces were recorded holds (namespace '').
_UNSCOPED_SQL = "SELECT event_id FROM feedback WHERE id_namespace = '' AND event_id IN ({})"


_ESCAPED = re.compile(r"\\(.)")
_UNESCAPE = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


def _uncell(text: str) -> str:
    """A COPY text cell's value (the escapes `copytext.cell` writes undone)."""
    return _ESCAPED.sub(lambda m: _UNESCAPE.get(m.group(1), m.group(1)), text) if "\\" in text else text


def has_unscoped(conn: Any) -> bool:
    """Whether any event is stored in the namespace '' (a seek on the key's first column)."""
    return conn.exec_driver_sql("SELECT 1 FROM feedback WHERE id_namespace = '' LIMIT 1").first() is not None


def drop_unscoped(conn: Any, rows: list[tuple] | bytes) -> tuple[list[tuple] | bytes, int]:
    """The rows (tuples or COPY text lines, event_id first) whose id no row of namespace '' holds, and their count.

    Events stored before namespaces were recorded kept their ids from every
    source; after the upgrade they still do, so no source stores one again.
    """
    if isinstance(rows, bytes):
        lines = rows[:-1].split(b"\n") if rows else []  # COPY text: a row per line, newlines in values escaped
        ids = [_uncell(ln.split(b"\t", 1)[0].decode()) for ln in lines]
    else:
        ids = [r[0] for r in rows]
    distinct = list(dict.fromkeys(ids))
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    taken: set[str] = set()
    cur = conn.connection.driver_connection.cursor()
    try:
        for i in range(0, len(distinct), 900):  # under every driver's parameter limit
            chunk = distinct[i : i + 900]
            cur.execute(_UNSCOPED_SQL.format(", ".join([mark] * len(chunk))), chunk)
            taken.update(r[0] for r in cur.fetchall())
    finally:
        cur.close()
    if not taken:
        return rows, len(ids)
    if isinstance(rows, bytes):
        kept = [ln + b"\n" for ln, i in zip(lines, ids) if i not in taken]
        return b"".join(kept), len(kept)
    kept_rows = [r for r in rows if r[0] not in taken]
    return kept_rows, len(kept_rows)
