"""Checks of single field values, shared by every source: each returns the value in its
stored form or raises `RowError(field, problem)` naming the field at fault.

`rows.parse_row` composes them into a whole event; the mapping, the trace
sources and the rating join use them one by one.

    >>> rating("4")
    (0.75, '4')
    >>> thumbs("1.0")
    True
    >>> text("prompt", "", required=True)
    Traceback (most recent call last):
    driftloop.ingest.values.RowError: prompt: empty
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from driftloop.ingest.times import epoch_time, is_epoch, zone

__all__ = [
    "RowError",
    "Scale",
    "check_json",
    "check_str",
    "count",
    "number",
    "plain_text",
    "rating",
    "segment",
    "text",
    "thumbs",
    "timestamp",
]

FUTURE_TOLERANCE = timedelta(days=1)  # clock skew allowed for event timestamps
# Earliest accepted timestamp; also keeps every ts inside pandas' datetime64[ns] range.
MIN_TS = datetime(1970, 1, 1, tzinfo=UTC)
MAX_INT = 2**31 - 1  # token counts are 32-bit integers in the store
MAX_TEXT_CHARS = 256 * 1024  # a longer prompt/response/correction is quarantined
SEGMENT_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_. -]{0,63}")
MAX_SEGMENT_KEYS = 16  # default of FieldMapping.segment_max_keys
MAX_SEGMENT_VALUE_CHARS = 256  # default of FieldMapping.segment_value_max_chars
Scale = Literal["stars", "thumbs", "unit"]
_STARS = {s: ((s - 1) / 4, str(s)) for s in range(1, 6)}  # stars -> (rating, raw)
THUMBS = {
    "up": True,
    "down": False,
    "true": True,
    "false": False,
    "1": True,
    "0": False,
    "yes": True,
    "no": False,
    "+1": True,
    "-1": False,
}


class RowError(ValueError):
    """A row that cannot be accepted: which field is at fault and what is wrong with it.

    `problem` is short and value-free, so reports can count problems;
    `detail` (optional) says more and goes to the quarantine row's reason.
    """

    def __init__(self, field: str, problem: str, detail: str = "") -> None:
        super().__init__(f"{field}: {problem}" + (f" ({detail})" if detail else ""))
        self.field, self.problem, self.detail = field, problem, detail

    @property
    def key(self) -> str:
        """`field: problem`, the key under which reports count this error."""
        return f"{self.field}: {self.problem}"

    @property
    def reason(self) -> str:
        """The problem with its detail, as written to the quarantine row."""
        return self.problem + (f" ({self.detail})" if self.detail else "")


def timestamp(v: Any, now: datetime, timezone: str | None = None) -> datetime:
    if v is None:
        raise RowError("ts", "missing")
    if isinstance(v, datetime):  # Parquet and SQL sources hand over typed timestamps
        v = v.isoformat()
    if is_epoch(v):
        try:
            ts = epoch_time(v)
        except ValueError as e:
            raise RowError("ts", str(e), str(v)[:64]) from None
        v = str(v)
    elif not isinstance(v, str):
        raise RowError("ts", "not an ISO-8601 string or epoch number")
    else:
        try:
            ts = datetime.fromisoformat(v.strip())
        except ValueError:
            raise RowError("ts", "not ISO-8601", v[:64]) from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        if timezone is None:
            raise RowError("ts", "no timezone", v[:64])
        ts = ts.replace(tzinfo=zone(timezone))  # an hour that occurs twice (DST ends): its first occurrence
    try:
        if ts.tzinfo is not UTC:  # fromisoformat gives this very object for Z and +00:00
            ts = ts.astimezone(UTC)
    except (OverflowError, ValueError):
        raise RowError("ts", "out of range", v[:64]) from None
    if ts > now + FUTURE_TOLERANCE:
        raise RowError("ts", "more than 1 day in the future", v[:64])
    if ts < MIN_TS:
        raise RowError("ts", "before 1970", v[:64])
    return ts


def plain_text(v: Any) -> bool:
    """True for a string that `text` would return unchanged: ASCII (so valid UTF-8), no NUL, not too long."""
    return type(v) is str and v.isascii() and "\x00" not in v and len(v) <= MAX_TEXT_CHARS


def text(name: str, v: Any, required: bool = False, numbers: bool = False) -> str | None:
    if v is None:
        if required:
            raise RowError(name, "missing")
        return None
    if numbers and isinstance(v, (int, float)) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str):
        raise RowError(name, "not a string")
    check_str(name, v)
    if len(v) > MAX_TEXT_CHARS:
        raise RowError(name, f"longer than {MAX_TEXT_CHARS} characters", f"{len(v)} characters")
    if required and not v.strip():
        raise RowError(name, "empty")
    return v


def check_str(name: str, s: str) -> None:
    # PostgreSQL text cannot hold NUL; a lone surrogate cannot be stored as UTF-8.
    if "\x00" in s:
        raise RowError(name, "contains a NUL character")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise RowError(name, "invalid Unicode (lone surrogate)") from None


def check_json(name: str, v: Any, depth: int = 0) -> None:
    if depth > 32:
        raise RowError(name, "nested too deeply")
    if isinstance(v, str):
        check_str(name, v)
    elif isinstance(v, float) and not math.isfinite(v):
        raise RowError(name, "non-finite number")
    elif isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise RowError(name, "non-string key")
            check_str(name, k)
            check_json(name, x, depth + 1)
    elif isinstance(v, list):
        for x in v:
            check_json(name, x, depth + 1)
    elif v is not None and not isinstance(v, (bool, int, float)):
        raise RowError(name, "not JSON", type(v).__name__)


def rating(v: Any, scale: Scale = "stars") -> tuple[float | None, str | None]:
    if v is None or (isinstance(v, str) and not v.strip() and scale != "stars"):
        return None, None
    raw = str(v)[:64]
    if scale == "thumbs":
        up = thumbs(v, "rating", "not a thumbs value (up/down, true/false, 1/0)")
        return (None, None) if up is None else (1.0 if up else 0.0, raw)
    if scale == "unit":
        x: Any = v
        if isinstance(v, str):
            try:
                x = float(v.strip())
            except ValueError:
                raise RowError("rating", "not a number in [0, 1]", v[:32]) from None
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not (0.0 <= x <= 1.0):
            raise RowError("rating", "not a number in [0, 1]", repr(v)[:32])
        return float(x), raw
    stars: Any = v
    if isinstance(v, str):
        try:
            stars = float(v.strip())
        except ValueError:
            raise RowError("rating", "not 1-5 stars", v[:32]) from None
    if isinstance(stars, float) and stars.is_integer():
        stars = int(stars)
    if isinstance(stars, bool) or not isinstance(stars, int) or not 1 <= stars <= 5:
        raise RowError("rating", "not 1-5 stars", repr(v)[:32])
    return (stars - 1) / 4, str(stars)


def thumbs(v: Any, name: str = "thumbs_up", problem: str = "not a boolean") -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1, -1):  # 1.0 as 1: exports write numbers as floats
        return v == 1
    if isinstance(v, str):
        w = v.strip().lower()
        if not w:
            return None
        if w in THUMBS:
            return THUMBS[w]
        if w in ("1.0", "0.0", "-1.0"):
            return w == "1.0"
    raise RowError(name, problem, repr(v)[:32])


def segment(v: Any, max_keys: int = MAX_SEGMENT_KEYS, max_value: int = MAX_SEGMENT_VALUE_CHARS) -> dict[str, str]:
    """The segment, checked: string keys of the SEGMENT_KEY form, string values of bounded length.

    Segments name metric series and monitor artifacts (one per key and
    value), so an unbounded key or value multiplies what every monitor run
    writes.
    """
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise RowError("segment", "not an object")
    if len(v) > max_keys:
        raise RowError("segment", f"more than {max_keys} keys", f"{len(v)} keys")
    for k, x in v.items():  # fast path: string keys and values, ASCII without NUL
        if not (
            type(k) is str
            and type(x) is str
            and x.isascii()
            and "\x00" not in x
            and len(x) <= max_value
            and SEGMENT_KEY.fullmatch(k)
        ):
            break
    else:
        return dict(v)
    for k, x in v.items():
        if not isinstance(k, str) or not isinstance(x, str):
            raise RowError("segment", "values must be strings")
        check_str("segment", k)
        if not SEGMENT_KEY.fullmatch(k):
            raise RowError("segment", "key not a safe name", "letters, digits, _ . - and spaces, at most 64")
        check_str("segment", x)
        if len(x) > max_value:
            raise RowError("segment", f"value longer than {max_value} characters", f"{len(x)} characters")
    return dict(v)


def number(name: str, v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RowError(name, "not a number")
    try:
        x = float(v)
    except OverflowError:
        raise RowError(name, "out of range") from None
    if not math.isfinite(x) or x < 0:
        raise RowError(name, "not a finite non-negative number")
    return x


def count(name: str, v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise RowError(name, "not an integer")
    if not 0 <= v <= MAX_INT:
        raise RowError(name, "out of range")
    return v
