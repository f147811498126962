"""Columnar fast path for JSONL files: pyarrow parses a batch of lines, vectorised checks validate it.

(CSV and Parquet blocks, and JSONL of a mapped source or another rating
scale, reach `_fast_rows` through `shapes.py` and `tabular.py`.)

A batch of lines is parsed by `pyarrow.json` in one call, and every check that
`parse_row` makes on a plain, valid row (types, required fields, timestamps
with a timezone and not in the future, 1-5 stars, text size, ASCII without
NUL) runs on whole columns. A row passes only when the row parser would accept
it unchanged; every other row (a malformed line, a wrong type, non-ASCII text,
an unknown key, a row whose texts may hold PII, ...) is decoded and parsed by
the row path exactly as before, so accepted events, stored values, event ids,
quarantine rows and reasons are the same whichever path a row takes
(tests/test_ingest_fast.py checks this differentially). Rows leave in input
order, so the first of two duplicates wins as before.

The writer's side (`worker.ingest_stream` in threads, `worker.ingest_in_process`
with a child process) calls `block_parts`, which gives the block's events in
the store's column form (`store.batch.EventColumns`), and writes them with
`Store.write_batch`:

    >>> if fast_path_ok(parser):   # else: files.run_batches, the row path
    ...     events, quarantine = block_parts(block, parser, source, reasons)
    ...     store.write_batch(Batch(source, events, quarantine, checkpoint))
"""

from __future__ import annotations

import importlib.util
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from driftloop.core.types import FeedbackEvent
from driftloop.ingest import shapes
from driftloop.ingest.checks import column_checks, key_order
from driftloop.ingest.lines import Block
from driftloop.ingest.redact import FLAG_SCREEN_REGEX, SECRET_HINT_REGEX, might_match
from driftloop.ingest.rows import DOTTED_VERSION, EXTRA_FIELDS, RowError, checked_event, event_id_for
from driftloop.store.batch import EventColumns, EventTable

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from driftloop.ingest.pipeline import RowParser
    from driftloop.store.batch import QuarantineRow


MAX_PARSE_ERRORS = 16  # arrow errors in one batch before the rest of it takes the row path
_STRINGS = ("event_id", "ts", "model_version", "prompt", "response", "correction")
_ROW_OF_ERROR = re.compile(r"in row (\d+)")


def available() -> bool:
    """True when pyarrow can be imported (it comes with mlflow); else every file takes the row path."""
    return importlib.util.find_spec("pyarrow") is not None


@contextmanager
def arrow_on_malloc() -> Iterator[None]:
    """Arrow allocates with the C library's malloc inside the block (its default pool after it).

    pyarrow's default pool (mimalloc) keeps the memory of every parsed batch
    around: with malloc the ingestion benchmark's peak RSS fell by about 80 MB
    (462 -> 379 MB, parse child included) and its rows/s did not fall
    (benchmarks/ingest.py). The pool is process-wide, so arrow work in other
    threads meanwhile uses malloc too, which changes nothing but the allocator.
    """
    if not available():
        yield
        return
    import pyarrow as pa

    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(before)


def fast_path_ok(parser: RowParser, fmt: str = "jsonl") -> bool:
    """True when the fast path of `fmt` gives what `parser` gives: a mapping `shapes` applies, pyarrow."""
    if not available() or (fmt == "jsonl" and (parser.text_cells or parser.typed)):
        return False
    return plain_rows(parser) or shapes.mapping_ok(parser.mapping)


def plain_rows(parser: RowParser) -> bool:
    """True for JSON rows in the feedback format itself (identity mapping, stars): no `shapes` step."""
    return isinstance(parser.event_function(), partial) and parser.mapping.rating_scale == "stars"


# ------------------------------------------------------------------- arrow
def _read(lines: list[bytes | None], idx: list[int], names: list[str]) -> tuple[pa.Table | None, int | None]:
    """Parse the lines at `idx` as one table (`names`: string columns), or (None, row of the error or None)."""
    import pyarrow as pa
    import pyarrow.json as pj

    buf = b"\n".join([lines[i] for i in idx])  # type: ignore[misc]
    schema = pa.schema([(k, pa.string()) for k in names])
    try:
        t = pj.read_json(
            io.BytesIO(buf),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(buf) + 1),
            parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        m = _ROW_OF_ERROR.search(str(e))
        return None, int(m.group(1)) if m and int(m.group(1)) < len(idx) else None
    return (t, None) if t.num_rows == len(idx) else (None, None)


def _tables(
    lines: list[bytes | None], idx: list[int], slow: list[int], names: list[str] | None = None
) -> list[tuple[list[int], pa.Table]]:
    """Parse `idx` into tables; a line arrow refuses goes to `slow` (the rest of the batch after too many)."""
    out, rest, errors = [], idx, 0
    names = names or list(_STRINGS)
    while rest:
        t, bad = _read(lines, rest, names)
        if t is not None:
            out.append((rest, t))
            break
        if bad is None or errors >= MAX_PARSE_ERRORS:
            slow.extend(rest)
            break
        errors += 1
        if bad:  # the lines before the bad one parse on their own
            head, _ = _read(lines, rest[:bad], names)
            if head is None:
                slow.extend(rest[:bad])
            else:
                out.append((rest[:bad], head))
        slow.append(rest[bad])
        rest = rest[bad + 1 :]
    return out


# -------------------------------------------------------------------- rows
def _to_list(c: Any) -> list[Any]:
    return c.to_pylist()


def block_parts(
    block: Block,
    parser: RowParser,
    source: str,
    reasons: Any,
) -> tuple[EventColumns, list[QuarantineRow]]:
    """A block's events in the store's column form (positions: line numbers) and its quarantine rows.

    `reasons` (a Counter) counts each quarantined row's problem. Redaction,
    content ids and quarantine are all done here; the store only turns the
    columns into rows or COPY text, maybe in another process.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from driftloop.ingest.files import json_object

    lines = block.lines
    slow: list[int] = []
    fast: list[int] = []
    # Arrow gets ASCII lines that look like one object; the row path takes the rest.
    if None not in lines and b"".join(lines).isascii():  # type: ignore[arg-type]
        arr = pa.array(lines, pa.binary())
        looks = pc.and_(pc.starts_with(arr, "{"), pc.ends_with(arr, "}")).to_numpy(zero_copy_only=False)
        fast = looks.nonzero()[0].tolist()
        slow = (~looks).nonzero()[0].tolist()
    else:
        for i, line in enumerate(lines):
            if line is not None and line[:1] == b"{" and line[-1:] == b"}" and line.isascii():
                fast.append(i)
            else:
                slow.append(i)
    now = parser.now or datetime.now(UTC)
    redactor = parser.redactor
    redact_all = redactor.enabled and redactor.screen is None
    screen = redactor.enabled and redactor.screen is might_match
    fast_parts: list[tuple[list[int], EventTable]] = []
    m = parser.mapping
    plain = plain_rows(parser)
    for idx, t in _tables(lines, fast, slow, None if plain else shapes.user_names(m, _STRINGS)) if fast else []:
        try:
            pre = None
            if not plain:
                pre, t = shapes.json_shape(t, m, b"\n".join([lines[i] for i in idx]))  # type: ignore[misc]
                if t is None:
                    slow.extend(idx)
                    continue
            got_idx, got = _fast_rows(
                lines,
                idx,
                t,
                now,
                redact_all,
                screen,
                redactor,
                parser.id_namespace,
                slow,
                (m.segment_max_keys, m.segment_value_max_chars),
                pre,
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            have = set(slow)  # e.g. a cast out of range: these rows take the row path
            slow.extend(i for i in idx if i not in have)
            continue
        if got is not None:
            fast_parts.append((got_idx, got))
    quarantine: list[QuarantineRow] = []
    slow_events: list[tuple[int, FeedbackEvent]] = []
    if slow:
        # Few rows: parse each as before; the store puts each where its line was.
        event = parser.event_function()
        for i in sorted(slow):
            line = lines[i]
            try:
                obj = json_object(line)
                e = event(obj, source)
            except RowError as e:
                reasons[e.key] += 1
                raw_text = (line if line is not None else block.samples[i]).decode("utf-8", "replace")
                where = block.numbers[i] if block.numbers else None
                quarantine.append(parser.quarantine(raw_text, e, source, where))
                continue
            slow_events.append((i, e))
    return EventColumns(fast_parts, slow_events), quarantine


def _fast_rows(
    lines: list[bytes | None],
    idx: list[int],
    t: pa.Table,
    now: datetime,
    redact_all: bool,
    screen: bool,
    redactor: Any,
    namespace: str,
    slow: list[int],
    limits: tuple[int, int],
    pre: shapes.Prepared | None = None,
) -> tuple[list[int], EventTable | None]:
    """(line numbers, events as columns) of the rows of `t` that pass every check; the others go to `slow`.

    `pre` describes a table that is not JSONL in the feedback format (`shapes.py`): its own row
    checks, its ratings, what its texts may hold; `lines` is then unused.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    buf = b"\n".join([lines[i] for i in idx]) if pre is None else b""  # type: ignore[misc]
    flags = (b"\\" in buf, b"\\u" in buf) if pre is None else (pre.escapes, pre.u_escapes)
    checked = column_checks(t, now, *flags, *limits)
    if checked is None:
        slow.extend(idx)
        return [], None
    ok, prep = checked
    if pre is not None:
        ok = pc.and_(ok, pre.ok)
    col, keys = prep["col"], prep["keys"]
    if redactor.enabled:
        # Ids, versions and segment keys are refused, not redacted: a row whose id or
        # version the redactor flags takes the row path, which quarantines it.
        if any(redactor.flags(k) for k in keys):
            slow.extend(idx)
            return [], None
        ok = pc.and_(ok, pa.array(~_flagged(col["event_id"], col["model_version"], redactor, redact_all)))
    seg_rows = pc.is_valid(col["segment"])
    # Keys in the struct's order: with two keys and no metadata (so no nested object that could
    # hold the same text), counting `"segment": {"<first key>"` settles it for the whole table.
    if (
        pre is None
        and len(keys) > 1
        and not (
            len(keys) == 2
            and col["metadata"].null_count == len(idx)
            and buf.count(b'"segment": {"' + keys[0].encode() + b'"') == pc.sum(seg_rows).as_py()
        )
    ):
        ok = pc.and_(ok, pc.or_(pc.invert(seg_rows), key_order(lines, idx, keys).fill_null(False)))
    take = ok.fill_null(False)
    c = col if take.false_count == 0 else {k: pc.filter(v, take) for k, v in col.items()}
    m = len(c["prompt"])
    if m < len(idx):
        mask = take.to_numpy(zero_copy_only=False)
        where = np.asarray(idx)
        slow.extend(where[~mask].tolist())
        idx = where[mask].tolist()
    if not m:
        return [], None
    ts = prep["ts"] if c is col else pc.filter(prep["ts"], take)
    corr = c["correction"]
    r = c["rating"]
    thumbs_up = c["thumbs_up"]
    if pre is not None:
        rating, raw = (pre.rating, pre.raw) if c is col else (pc.filter(pre.rating, take), pc.filter(pre.raw, take))
        if pre.thumbs:  # the thumbs scale sets thumbs_up where the row has none
            thumbs_up = thumbs_up.cast(pa.bool_()) if thumbs_up.type == pa.null() else thumbs_up
            thumbs_up = pc.if_else(pc.is_null(thumbs_up), pc.equal(rating, 1.0), thumbs_up)
    elif r.type == pa.null():
        rating, raw = pa.nulls(m), pa.nulls(m)
    else:
        ri = pc.cast(r, pa.int64())
        rating = pc.divide(pc.cast(pc.subtract(ri, 1), pa.float64()), 4.0)
        raw = pc.cast(ri, pa.string())
    lat = c["latency_ms"]
    latency = pc.cast(lat, pa.float64()) if lat.type != pa.null() else pa.nulls(m)
    tin = pc.cast(c["tokens_in"], pa.int64()) if c["tokens_in"].type != pa.null() else pa.nulls(m)
    tout = pc.cast(c["tokens_out"], pa.int64()) if c["tokens_out"].type != pa.null() else pa.nulls(m)
    seg = c["segment"]
    vals = [pc.struct_field(seg, k) for k in keys]
    if keys:
        parts: list[Any] = ["{"]
        for j, k in enumerate(keys):
            parts += [(", " if j else "") + f'"{k}": "', vals[j], '"']
        parts.append("}")
        seg_text = pc.fill_null(pc.binary_join_element_wise(*parts, ""), "{}")
    else:
        seg_text = pa.array(["{}"] * m, pa.string())
    eid = c["event_id"]
    cols = {
        "event_id": eid,
        "ts": ts,
        "model_version": pc.fill_null(c["model_version"], ""),
        "prompt": c["prompt"],
        "response": pc.fill_null(c["response"], ""),
        "rating": rating,
        "rating_raw": raw,
        "thumbs_up": thumbs_up,
        "correction": pc.if_else(pc.equal(corr, ""), pa.scalar(None, pa.string()), corr),
        "segment": seg_text,
        "latency_ms": latency,
        "tokens_in": tin,
        "tokens_out": tout,
    }
    # Rows that need Python: PII may be present (one scan over all texts), or no given id.
    special = set(pc.is_null(eid).to_numpy(zero_copy_only=False).nonzero()[0].tolist()) if eid.null_count else set()
    if redact_all:
        special = set(range(m))
    elif screen:
        hit = np.zeros(m, dtype=bool)
        for x in (c["prompt"], c["response"], c["correction"], *vals):
            hit |= screen_hits(x)
        special.update(hit.nonzero()[0].tolist())
    fixed: dict[int, FeedbackEvent] = {}
    if special:
        at = sorted(special)
        where = pa.array(at, pa.int64())
        sub = {k: _to_list(pc.take(x, where)) for k, x in cols.items() if k != "segment"}
        seg_vals = [_to_list(pc.take(v, where)) for v in vals]
        seg_given = _to_list(pc.take(seg_rows if c is col else pc.filter(seg_rows, take), where))
        for n, j in enumerate(at):
            row = {k: v[n] for k, v in sub.items()}
            segment = dict(zip(keys, [v[n] for v in seg_vals])) if keys and seg_given[n] else {}
            fixed[j] = _special_event(row, segment, redactor, namespace)
    plain = pre.plain if pre is not None else b"\\" not in buf and b"\t" not in buf and b"\r" not in buf
    return idx, EventTable(cols, fixed, plain=plain)


def _flagged(eid: Any, mv: Any, redactor: Any, redact_all: bool) -> np.ndarray:
    """Which rows hold an event id or a model version that `redactor.flags` (as `rows._unflagged` judges)."""
    import numpy as np

    n = len(eid)
    out = np.zeros(n, dtype=bool)
    for a, version in ((eid, False), (mv, True)):
        if a.null_count == n:
            continue
        cand = (np.ones(n, dtype=bool) if redact_all else _may_flag(a)).nonzero()[0]
        if not len(cand):
            continue
        values = a.take(cand).to_pylist()
        for j, v in zip(cand.tolist(), values):
            if v and not (version and DOTTED_VERSION.fullmatch(v)) and redactor.flags(v):
                out[j] = True
    return out


def _may_flag(a: Any) -> np.ndarray:
    """Which values of `a` the built-in detectors could flag at all (`redact.FLAG_SCREEN_REGEX`): an
    id like `e123` has a digit, so the byte screen would send every row to the redactor."""
    import pyarrow.compute as pc

    return pc.match_substring_regex(a, FLAG_SCREEN_REGEX).fill_null(False).to_numpy(zero_copy_only=False)


def screen_hits(a: Any) -> np.ndarray:
    """Which strings of `a` hold an '@', a ':', an ASCII digit or a secret's start (`redact.might_match` on ASCII text).

    One pass of numpy over the array's bytes instead of a regex per string
    (and one RE2 scan for the starts of keys and tokens); null strings never
    hit. Arrays of another type take the regex.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(a)
    if a.type != pa.string():
        return (
            pc.match_substring_regex(a, "[@:0-9]|" + SECRET_HINT_REGEX).fill_null(False).to_numpy(zero_copy_only=False)
        )
    rows = np.zeros(n, dtype=bool)
    offsets = np.frombuffer(a.buffers()[1], dtype=np.int32, count=n + 1, offset=a.offset * 4)
    if a.buffers()[2] is None or offsets[-1] == offsets[0]:
        return rows
    rows |= pc.match_substring_regex(a, SECRET_HINT_REGEX).fill_null(False).to_numpy(zero_copy_only=False)
    data = np.frombuffer(a.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    hit = ((data - np.uint8(48)) < 10) | (data == 64) | (data == 58)  # 0-9 (uint8 wraps below '0'), '@', ':'
    where = np.flatnonzero(hit) + offsets[0]
    rows[np.searchsorted(offsets, where, side="right") - 1] = True
    if a.null_count:
        rows &= a.is_valid().to_numpy(zero_copy_only=False)
    return rows


def _special_event(row: dict[str, Any], segment: dict[str, str], redactor: Any, namespace: str) -> FeedbackEvent:
    """The event of a fast row that needs Python: redaction (as `parse_row` does it) and/or the content hash id."""
    prompt, response, correction = row["prompt"], row["response"], row["correction"]
    if redactor.enabled:
        screen = redactor.screen
        if screen is None or screen("\n".join((prompt, response, correction or "", *segment.values()))):
            prompt, response = redactor.text(prompt), redactor.text(response)
            correction = redactor.text(correction) if correction else correction
            if segment:
                segment = {k: redactor.text(x) for k, x in segment.items()}
    ts = row["ts"].astimezone(UTC)
    eid = row["event_id"]
    if eid is None:
        eid = event_id_for(
            {
                "ts": ts.isoformat(),
                "model_version": row["model_version"],
                "prompt": prompt,
                "response": response,
                "rating_raw": row["rating_raw"],
                "thumbs_up": row["thumbs_up"],
                "correction": correction,
                "segment": segment,
                "latency_ms": row["latency_ms"],
                "tokens_in": row["tokens_in"],
                "tokens_out": row["tokens_out"],
            },
            namespace,
        )
    defaults = {f: FeedbackEvent.model_fields[f].get_default(call_default_factory=True) for f in EXTRA_FIELDS}
    return checked_event(
        {
            **defaults,
            **row,
            "event_id": eid,
            "ts": ts,
            "prompt": prompt,
            "response": response,
            "correction": correction,
            "segment": segment,
            "metadata": {},
        }
    )
