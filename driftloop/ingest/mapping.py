"""Field mapping: a team's own row shape onto the feedback format that `parse_row` reads.

The config names, per source, which of the team's fields hold each
`FeedbackEvent` field, which fields are segments, and the rating scale.
Rows from text formats (CSV) have every cell as a string; `text_cells=True`
turns empty cells into nulls and numeric cells into numbers first.

    >>> m = FieldMapping(fields={"prompt": "question", "ts": "created"}, segment_fields=["locale"])
    >>> map_row({"question": "hi", "created": "2026-11-01T00:00:00Z", "locale": "de"}, m)
    {'prompt': 'hi', 'ts': '2026-11-01T00:00:00Z', 'segment': {'locale': 'de'}}
"""

from __future__ import annotations

import json
import math
from datetime import date, time
from decimal import Decimal
from typing import Any

from driftloop.core.config import FieldMapping
from driftloop.core.config_ingest import OPTIONAL_FIELDS
from driftloop.ingest.rows import RowError

NUMERIC = {"latency_ms": float, "tokens_in": int, "tokens_out": int}
_IDENTITY = FieldMapping()


def map_row(obj: Any, mapping: FieldMapping = _IDENTITY, text_cells: bool = False, typed: bool = False) -> Any:
    """Rename mapped fields, collect segment fields, and type text cells; other keys pass through.

    A mapped field missing from the row raises RowError naming the user's
    field (`mapped field 'answer' (-> response) missing`), unless it maps one
    of OPTIONAL_FIELDS, which some rows lack; then the event has no value
    there. Segment values become strings; an empty one is dropped.
    `typed` (Parquet, SQL) turns dates, decimals and bytes into JSON values.
    Raises RowError for a segment column that holds a nested value.
    """
    if not isinstance(obj, dict):
        return obj
    if text_cells:
        obj = {k: (None if v == "" else v) for k, v in obj.items()}
    if mapping.fields or mapping.segment_fields:
        out = dict(obj)
        for field, name in mapping.fields.items():
            if name not in out:
                if field not in OPTIONAL_FIELDS:
                    raise RowError(field, f"mapped field {name!r} (-> {field}) missing")
            elif name != field:
                out[field] = out.pop(name)
        if mapping.segment_fields:
            seg = out.get("segment")
            seg = dict(seg) if isinstance(seg, dict) else ({} if seg is None else seg)
            for name in mapping.segment_fields:
                v = out.pop(name, None)
                if v is None:
                    continue
                if isinstance(v, (dict, list)):
                    raise RowError("segment", "values must be strings", name)
                if isinstance(seg, dict):
                    seg[name] = _plain(v) if isinstance(v, str) else str(_plain(v))
            if seg:
                out["segment"] = seg
        obj = out
    if text_cells:
        for k, kind in NUMERIC.items():
            v = obj.get(k)
            if isinstance(v, str):
                obj[k] = _number(v, kind)
        for k in ("segment", "metadata"):
            v = obj.get(k)
            if isinstance(v, str) and v.lstrip().startswith("{"):
                try:
                    obj[k] = json.loads(v)
                except ValueError:
                    raise RowError(k, "not a JSON object", v[:32]) from None
    if typed:
        return {k: v if k == "ts" else _plain(v) for k, v in obj.items()}
    return obj


def unmapped(mapping: FieldMapping, rows: list[dict[str, Any]], resumed: bool, full: bool) -> str | None:
    """What no row of a source's first batch holds, as one line naming the user's field, or None.

    `rows` are the batch's decoded rows before mapping. A name the mapping
    gives that none of them carries is a typo, not data: storing the batch
    would keep every row without that value. An optional field (and a segment
    field) is exempt when the run `resumed` a source part-way and the batch is
    not `full`: a few new rows may all lack it. No rows: nothing to judge.
    """
    if not rows:
        return None
    names = [
        (name, f"mapped field {name!r} (-> {field})", field in OPTIONAL_FIELDS)
        for field, name in mapping.fields.items()
    ]
    names += [(name, f"segment field {name!r}", True) for name in mapping.segment_fields]
    for name, what, optional in names:
        if (not optional or full or not resumed) and not any(name in r for r in rows):
            return f"{what} is in none of the {len(rows)} rows of the first batch"
    return None


def _number(s: str, kind: type) -> Any:
    try:
        x = float(s.strip())
    except ValueError:
        return s  # parse_row reports "not a number" with the field name
    if kind is int and math.isfinite(x) and x.is_integer():
        return int(x)
    return x


def _plain(v: Any) -> Any:
    """Typed values from Parquet and SQL as JSON-like Python values."""
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, date):  # datetime too
        return v.isoformat()
    if isinstance(v, time):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        try:
            return bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            raise RowError("(row)", "invalid UTF-8", "binary value") from None
    return v
