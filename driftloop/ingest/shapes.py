"""Tables of other shapes in the form the columnar checks read: a mapping, thumbs, CSV cells, Parquet types.

The columnar fast path (`columnar.py`) checks tables whose columns are named
and typed as JSONL in the feedback format holds them. A source with a field
mapping, a rating scale other than stars, CSV text cells or Parquet types is
brought into that form here, column by column, doing what `mapping.map_row`
and `values.rating` do to one row; a row whose value any step here cannot
convert exactly as they would (a number written oddly, a segment field that
is not a string, a thumbs word with blanks, ...) is marked not ok and takes
the row path, which gives the precise result. A mapping or a table this does
not cover at all (a user name that is another field's own name, a column of
another type) gives None: the whole batch takes the row path.

    >>> t, ok = canonical(table, FieldMapping(fields={"prompt": "question"}, segment_fields=["locale"]))
    >>> t.column_names
    ['prompt', 'segment']
    >>> ok, rating, raw = ratings(t.column("rating"), "thumbs")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from driftloop.core.config import FieldMapping
from driftloop.core.config_ingest import OPTIONAL_FIELDS
from driftloop.ingest.rows import KNOWN_FIELDS
from driftloop.ingest.values import THUMBS

if TYPE_CHECKING:
    import pyarrow as pa

_THUMB_WORDS = sorted({*THUMBS, "1.0", "0.0", "-1.0"})
_THUMB_UP = sorted({*(w for w, up in THUMBS.items() if up), "1.0"})
# Cells `mapping._number` reads as `float()` does and arrow's cast alike; others take the row path.
_FLOAT_CELL = r"^[0-9]{1,15}(?:\.[0-9]{1,15})?$"
_INT_CELL = r"^[0-9]{1,10}(?:\.0{1,15})?$"
NUMERIC = ("latency_ms", "tokens_in", "tokens_out")


class Prepared(NamedTuple):
    """What `_fast_rows` needs to know of a table that `shapes.py` made (CSV, Parquet, a mapping).

    `ok`: rows its own conversions accept; `rating`, `raw`: the ratings read on the
    source's scale (`thumbs`: that scale, which sets thumbs_up); `escapes`,
    `u_escapes`: whether any text may hold a backslash, quote or control character,
    or non-ASCII text or NUL; `plain`: no text holds a backslash, tab, CR or LF.
    """

    ok: Any
    rating: Any
    raw: Any
    thumbs: bool
    escapes: bool
    u_escapes: bool
    plain: bool


def json_shape(t: pa.Table, m: Any, buf: bytes) -> tuple[Prepared | None, pa.Table | None]:
    """A JSONL table of a mapped source (or another scale) as `_fast_rows` reads it (None: row path)."""
    return prepared(canonical(t, m), m.rating_scale, b"\\" in buf, b"\\u" in buf, plain_text(buf))


def plain_text(buf: bytes) -> bool:
    """No backslash, tab or CR in `buf` (JSON lines: none in any text either)."""
    return b"\\" not in buf and b"\t" not in buf and b"\r" not in buf


def prepared(
    shaped: tuple[pa.Table, Any] | None, scale: str, escapes: bool, u_escapes: bool, plain: bool
) -> tuple[Prepared | None, pa.Table | None]:
    """(what `_fast_rows` needs, the table without its rating) of a table `shapes` made, or (None, None)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if shaped is None:
        return None, None
    t, ok = shaped
    n = t.num_rows
    r = ratings(t.column("rating").combine_chunks() if "rating" in t.column_names else pa.nulls(n), scale)
    if r is None:
        return None, None
    rok, rating, raw = r
    if "rating" in t.column_names:
        t = t.drop_columns(["rating"])
    return Prepared(pc.and_(ok, rok), rating, raw, scale == "thumbs", escapes, u_escapes, plain), t


def mapping_ok(m: FieldMapping) -> bool:
    """True when `canonical` can apply `m`: renames onto names no other field uses, stars or thumbs."""
    if m.rating_scale not in ("stars", "thumbs"):
        return False
    users = [n for f, n in m.fields.items() if n != f]
    names = users + list(m.segment_fields)
    return (
        not ({"segment", "metadata"} & {f for f, n in m.fields.items() if n != f})
        and len(set(names)) == len(names)
        and not (set(names) & KNOWN_FIELDS)
    )


def user_names(m: FieldMapping, fields: tuple[str, ...]) -> list[str]:
    """The source's own names of `fields` (the JSON reader's explicit string columns) and its segment fields."""
    return [m.fields.get(f, f) for f in fields] + list(m.segment_fields)


def canonical(t: pa.Table, m: FieldMapping) -> tuple[pa.Table, Any] | None:
    """`t` with the mapping applied (user names -> fields, segment fields -> a struct) and the rows it allows.

    A mapped field that every event needs and a row lacks is quarantined by the
    row path (`mapped field ... missing`); a null value there is accepted. Arrow
    cannot tell the two apart, so such rows (null there) take the row path.
    None: a column this cannot map (a field's own name that the mapping
    renames, a segment beside segment fields, a segment field not of strings).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    names = t.column_names
    renamed = {n: f for f, n in m.fields.items() if n != f}
    if any(f in names for f in renamed.values()) or (m.segment_fields and "segment" in names):
        return None
    ok = pa.array([True] * t.num_rows, pa.bool_())
    cols: dict[str, Any] = {}
    given: dict[str, Any] = {}
    segs = set(m.segment_fields)
    for n in names:
        c = t.column(n).combine_chunks()
        if n in segs:
            if c.type not in (pa.string(), pa.null()):
                return None
            given[n] = c.cast(pa.string())
            continue
        f = renamed.get(n, n)
        cols[f] = c
        if n in renamed and f not in OPTIONAL_FIELDS:
            ok = pc.and_(ok, pc.is_valid(c))
    if m.segment_fields:
        seg = [given.get(n, pa.nulls(t.num_rows, pa.string())) for n in m.segment_fields]
        any_given = pc.is_valid(seg[0])
        all_given = pc.and_(pc.is_valid(seg[0]), pc.greater(pc.binary_length(seg[0]), 0))
        for v in seg[1:]:
            any_given = pc.or_(any_given, pc.is_valid(v))
            all_given = pc.and_(all_given, pc.and_(pc.is_valid(v), pc.greater(pc.binary_length(v), 0)))
        # A row with some of the fields (or an empty one) has a smaller segment: the row path builds it.
        ok = pc.and_(ok, pc.or_(pc.invert(any_given), all_given.fill_null(False)))
        cols["segment"] = pa.StructArray.from_arrays(
            [v.fill_null("") for v in seg], list(m.segment_fields), mask=pc.invert(any_given)
        )
    return pa.table(cols) if cols else pa.table({"prompt": pa.nulls(t.num_rows, pa.string())}), ok


def ratings(r: Any, scale: str) -> tuple[Any, Any, Any] | None:
    """(rows whose rating converts here, rating, raw) of a rating column on `scale` (stars or thumbs), or None.

    As `values.rating`: stars 1-5 -> (s-1)/4 with the integer as raw text; thumbs
    (up/down, true/false, 1/0, yes/no, +1/-1; any case) -> 1.0/0.0 with the value as
    written. A string with blanks or a float takes the row path.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(r)
    if r.type == pa.null():
        return pa.array([True] * n), pa.nulls(n, pa.float64()), pa.nulls(n, pa.string())
    if scale == "stars":
        if r.type == pa.int64():
            ok = _in(r, pa.array([1, 2, 3, 4, 5]))
            ri = r
        elif r.type == pa.string():
            ok = pc.match_substring_regex(r, "^[1-5]$").fill_null(True)
            ri = pc.cast(pc.if_else(ok, r, pa.scalar(None, pa.string())), pa.int64())
        else:
            return None
        good = pc.if_else(ok, ri, pa.scalar(None, pa.int64()))
        return ok, pc.divide(pc.cast(pc.subtract(good, 1), pa.float64()), 4.0), pc.cast(good, pa.string())
    if r.type == pa.bool_():
        return (
            pa.array([True] * n),
            pc.cast(r, pa.float64()),
            pc.if_else(r, pa.scalar("True"), pa.scalar("False")),
        )
    if r.type == pa.int64():
        ok = _in(r, pa.array([0, 1, -1]))
        return ok, pc.cast(pc.equal(r, 1), pa.float64()), pc.cast(r, pa.string())
    if r.type == pa.string():
        low = pc.utf8_lower(r)
        ok = _in(low, pa.array(_THUMB_WORDS))
        up = pc.if_else(pc.is_null(r), pa.scalar(None, pa.bool_()), pc.is_in(low, pa.array(_THUMB_UP)))
        return ok, pc.cast(up, pa.float64()), r
    return None


def _in(c: Any, values: Any) -> Any:
    """Rows of `c` that are null or one of `values` (arrow's is_in says false for a null)."""
    import pyarrow.compute as pc

    return pc.or_(pc.is_null(c), pc.is_in(c, values))


def typed_cells(t: pa.Table) -> tuple[pa.Table, Any] | None:
    """A CSV table (every cell a string) typed as `mapping.map_row(text_cells=True)` types it, and the rows it allows.

    Empty cells become nulls; latency and token counts become numbers where
    written plainly; thumbs_up becomes a boolean where it is a thumbs word.
    None for a `segment` or `metadata` column (JSON text: the row path reads it).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if {"segment", "metadata"} & set(t.column_names):
        return None
    ok = pa.array([True] * t.num_rows, pa.bool_())
    cols: dict[str, Any] = {}
    for name in t.column_names:
        c = t.column(name).combine_chunks()
        c = pc.if_else(pc.equal(c, ""), pa.scalar(None, pa.string()), c)
        if name in NUMERIC:
            good = pc.match_substring_regex(c, _FLOAT_CELL if name == "latency_ms" else _INT_CELL).fill_null(True)
            ok = pc.and_(ok, good)
            c = pc.cast(pc.if_else(good, c, pa.scalar(None, pa.string())), pa.float64())
            if name != "latency_ms":
                c = pc.cast(c, pa.int64())
        elif name == "thumbs_up":
            low = pc.utf8_lower(c)
            ok = pc.and_(ok, _in(low, pa.array(_THUMB_WORDS)))
            c = pc.if_else(pc.is_null(low), pa.scalar(None, pa.bool_()), pc.is_in(low, pa.array(_THUMB_UP)))
        cols[name] = c
    return pa.table(cols), ok


def typed_columns(t: pa.Table) -> pa.Table | None:
    """A Parquet table with the types JSON has (`mapping.map_row(typed=True)`), or None for another type.

    Strings (also large and dictionary-encoded), integers, floats, booleans and
    nulls map onto string, int64, float64, bool and null; anything else
    (timestamps, decimals, dates, bytes, lists) takes the row path.
    """
    import pyarrow as pa

    cols: dict[str, Any] = {}
    for name in t.column_names:
        c = t.column(name).combine_chunks()
        ty = c.type
        if pa.types.is_dictionary(ty):
            c, ty = c.dictionary_decode(), ty.value_type
        if pa.types.is_string(ty) or pa.types.is_large_string(ty):
            c = c.cast(pa.string())
        elif pa.types.is_integer(ty) and ty != pa.uint64():
            c = c.cast(pa.int64())
        elif pa.types.is_floating(ty) and ty != pa.float16():
            c = c.cast(pa.float64())
        elif not (pa.types.is_boolean(ty) or pa.types.is_null(ty)):
            return None
        cols[name] = c
    return pa.table(cols)
