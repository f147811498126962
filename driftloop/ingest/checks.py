"""Vectorised checks of the columnar fast path: which parsed rows `parse_row` would accept unchanged.

Each check mirrors one of `parse_row`'s fast paths for a valid value, on a
whole pyarrow column; a row that fails any of them is not rejected here but
handed to the row path, which gives the precise reason.

    >>> ok, prep = column_checks(table, now, escapes=False, u_escapes=False)
    >>> ok.to_pylist()
    [True, False, True]
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from driftloop.ingest.rows import CHECKED_FIELDS, KNOWN_FIELDS, SAFE_ID, SAFE_VERSION
from driftloop.ingest.values import (
    FUTURE_TOLERANCE,
    MAX_INT,
    MAX_SEGMENT_KEYS,
    MAX_SEGMENT_VALUE_CHARS,
    MAX_TEXT_CHARS,
    MIN_TS,
    SEGMENT_KEY,
)

if TYPE_CHECKING:
    import pyarrow as pa

# The keys this module checks; a row with any other field of the event takes the row path.
FAST_FIELDS = KNOWN_FIELDS & CHECKED_FIELDS
# ISO-8601 forms that datetime.fromisoformat and arrow's parser read alike; others take the row path.
_TS = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
_TEXTS = ("event_id", "ts", "model_version", "prompt", "response", "correction")
# A character outside Python's ASCII whitespace (str.strip() also strips \x1c-\x1f).
_NOT_BLANK = r"[^ \t\n\r\x0b\x0c\x1c-\x1f]"


def _plain(u_escapes: bool, pc: Any, col: Any, max_chars: int) -> Any:
    """ASCII (so valid UTF-8), no NUL, at most `max_chars` characters; null where the value is null."""
    if not u_escapes:
        return pc.less_equal(pc.binary_length(col), max_chars)
    return pc.and_(
        pc.and_(pc.string_is_ascii(col), pc.invert(pc.match_substring(col, "\x00"))),
        pc.less_equal(pc.binary_length(col), max_chars),
    )


def column_checks(
    t: pa.Table,
    now: datetime,
    escapes: bool,
    u_escapes: bool,
    max_keys: int = MAX_SEGMENT_KEYS,
    max_value: int = MAX_SEGMENT_VALUE_CHARS,
) -> tuple[Any, dict[str, Any]] | None:
    """(mask of rows the row parser would accept unchanged, prepared columns), or None for 'no row'.

    The lines are ASCII, so only a JSON escape can put a NUL, a control
    character or non-ASCII text into a string: without `u_escapes` (a \\u in
    the lines) the ASCII and NUL checks are skipped, without `escapes` (any
    backslash) the check of segment values for characters JSON would escape.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    plain = partial(_plain, u_escapes)
    names = set(t.column_names)
    if not names <= FAST_FIELDS:
        return None  # unknown keys go to metadata, other fields are the row path's; null and absent look alike here
    n = t.num_rows
    col = {k: t.column(k).combine_chunks() if k in names else pa.nulls(n) for k in FAST_FIELDS}
    for k in _TEXTS:  # a text column of nulls only (CSV, Parquet) is checked as strings
        if col[k].type == pa.null():
            col[k] = col[k].cast(pa.string())
    ty = {k: c.type for k, c in col.items()}
    is_num = (pa.int64(), pa.float64(), pa.null())
    if (
        ty["rating"] not in is_num
        or ty["latency_ms"] not in is_num
        or ty["tokens_in"] not in is_num
        or ty["tokens_out"] not in is_num
        or ty["thumbs_up"] not in (pa.bool_(), pa.null())
    ):
        return None
    seg = col["segment"]
    keys: list[str] = []
    if ty["segment"] != pa.null():
        if not pa.types.is_struct(ty["segment"]) or ty["segment"].num_fields == 0:
            return None
        keys = [f.name for f in ty["segment"]]
        if len(keys) > max_keys or any(
            f.type != pa.string() or not SEGMENT_KEY.fullmatch(f.name) for f in ty["segment"]
        ):
            return None
    ok = pc.is_null(col["metadata"])  # a row with metadata takes the row path
    # ts: a form both parsers read alike, then the range check on the parsed value.
    ts_ok = pc.match_substring_regex(col["ts"], _TS).fill_null(False)
    try:
        ts = pc.cast(pc.if_else(ts_ok, col["ts"], pa.scalar(None, pa.string())), pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # e.g. 30 February: let the row parser say so
    hi = pa.scalar(now + FUTURE_TOLERANCE, pa.timestamp("us", tz="UTC"))
    lo = pa.scalar(MIN_TS, pa.timestamp("us", tz="UTC"))
    ok = pc.and_(ok, pc.and_(pc.less_equal(ts, hi), pc.greater_equal(ts, lo)).fill_null(False))
    eid = col["event_id"]
    # Ids and versions of the safe forms only (ASCII, no blank, no NUL, bounded): see rows.SAFE_ID.
    ok = pc.and_(ok, pc.match_substring_regex(eid, f"^(?:{SAFE_ID.pattern})$").fill_null(True))
    prompt = col["prompt"]
    ok = pc.and_(
        ok, pc.and_(plain(pc, prompt, MAX_TEXT_CHARS), pc.match_substring_regex(prompt, _NOT_BLANK)).fill_null(False)
    )
    ok = pc.and_(ok, plain(pc, col["response"], MAX_TEXT_CHARS).fill_null(True))
    ok = pc.and_(ok, plain(pc, col["correction"], MAX_TEXT_CHARS).fill_null(True))
    ok = pc.and_(ok, pc.match_substring_regex(col["model_version"], f"^(?:{SAFE_VERSION.pattern})$").fill_null(True))
    r = col["rating"]
    if ty["rating"] != pa.null():  # 1-5 stars; 4.0 reads as 4
        ok = pc.and_(ok, pc.is_in(r, pa.array([1, 2, 3, 4, 5], ty["rating"])).fill_null(True))
    for k in ("tokens_in", "tokens_out"):
        c = col[k]
        if ty[k] == pa.float64():
            ok = pc.and_(ok, pc.equal(pc.floor(c), c).fill_null(True))
        if ty[k] != pa.null():
            ok = pc.and_(ok, pc.and_(pc.greater_equal(c, 0), pc.less_equal(c, MAX_INT)).fill_null(True))
    if ty["latency_ms"] != pa.null():
        ok = pc.and_(ok, pc.greater_equal(col["latency_ms"], 0).fill_null(True))
    seg_ok = pc.is_null(seg)
    if keys:
        # Every key present with a plain value that JSON writes as is (no quote, backslash, control).
        v_ok = pc.is_valid(seg)
        for k in keys:
            v = pc.struct_field(seg, k)
            v_good = plain(pc, v, max_value)
            if escapes:
                v_good = pc.and_(v_good, pc.invert(pc.match_substring_regex(v, r'["\\\x00-\x1f]')))
            v_ok = pc.and_(v_ok, v_good.fill_null(False))
        seg_ok = pc.or_(seg_ok, v_ok)
    ok = pc.and_(ok, seg_ok)
    return ok, {"col": col, "ts": ts, "keys": keys}


def key_order(lines: list[bytes | None], idx: list[int], keys: list[str]) -> Any:
    """Rows whose segment object has the struct's keys in its order (arrow keeps the first row's order).

    Python keeps each row's own order and stores it; a row written otherwise
    (or with escapes in its segment) takes the row path.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array([lines[i] for i in idx], pa.binary())
    ws = "[ \t\r]*"
    members = f"{ws},{ws}".join(f'"{re.escape(k)}"{ws}:{ws}"[^"\\\\]*"' for k in keys)
    return pc.match_substring_regex(arr, f'"segment"{ws}:{ws}\\{{{ws}{members}{ws}\\}}')
