"""Row validation shared by every source: one decoded row in, one `FeedbackEvent` out.

`parse_row` checks every field and raises `RowError(field, problem)` and
nothing else, so each source can quarantine a bad row with a precise reason
and go on. Ratings are normalised to [0, 1] from the scale the source uses
(stars 1-5, thumbs, or unit 0-1), with the raw value kept. A `Redactor`, when
given, replaces PII in every text before the event id is computed, so neither
the stored texts nor the ids carry it.

    >>> e = parse_row({"ts": "2026-11-01T10:00:00+00:00", "prompt": "hi", "rating": 4}, "a.jsonl")
    >>> e.rating, e.rating_raw
    (0.75, '4')
    >>> parse_row({"ts": "2026-11-01T10:00:00", "prompt": "hi"}, "a.jsonl")
    Traceback (most recent call last):
    RowError: ts: no timezone (2026-11-01T10:00:00)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from driftloop.core.types import FeedbackEvent
from driftloop.ingest.times import epoch_time, is_epoch, zone

if TYPE_CHECKING:
    from pydantic import TypeAdapter

    from driftloop.ingest.redact import Redactor

FUTURE_TOLERANCE = timedelta(days=1)  # clock skew allowed for event timestamps
# Earliest accepted timestamp; also keeps every ts inside pandas' datetime64[ns] range.
MIN_TS = datetime(1970, 1, 1, tzinfo=UTC)
MAX_INT = 2**31 - 1  # token counts are 32-bit integers in the store
MAX_TEXT_CHARS = 256 * 1024  # a longer prompt/response/correction is quarantined
# Ids, versions and segment keys are stored and logged exactly as given (they key rows,
# name drift features and MLflow metrics), so they are never redacted: a value outside
# these forms, or one holding what the redactor detects, is quarantined instead.
MAX_ID_CHARS = 64  # the store's event_id column
MAX_VERSION_CHARS = 128  # the store's model_version column
SAFE_ID = re.compile(r"[A-Za-z0-9._:@/+-]{1,64}")
SAFE_VERSION = re.compile(r"[A-Za-z0-9._:@/+-]{0,128}")
# A version of two or three dotted numbers (1.2.3, 2026.11.01) reads as a phone number
# to the detectors; it is taken as a version. Four (an IPv4 address) is not.
DOTTED_VERSION = re.compile(r"v?\d{1,9}(?:\.\d{1,9}){1,2}")
SEGMENT_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_. -]{0,63}")
SAFE_ID_TEXT = "letters, digits and . _ : @ / + - only"
MAX_SEGMENT_KEYS = 16  # default of FieldMapping.segment_max_keys
MAX_SEGMENT_VALUE_CHARS = 256  # default of FieldMapping.segment_value_max_chars
# Keys of the feedback format: the event's fields (rating_raw is derived, never read). Any other key
# goes into `metadata`.
KNOWN_FIELDS = frozenset(FeedbackEvent.model_fields) - {"rating_raw"}
# The fields `parse_row` checks one by one; any other field of the event (an optional one added
# later) is checked against its annotation, and redacted where it is text (see `_extra`).
CHECKED_FIELDS = frozenset(
    {
        "event_id",
        "ts",
        "model_version",
        "prompt",
        "response",
        "rating",
        "rating_raw",
        "thumbs_up",
        "correction",
        "segment",
        "latency_ms",
        "tokens_in",
        "tokens_out",
        "metadata",
    }
)
EXTRA_FIELDS = tuple(f for f in FeedbackEvent.model_fields if f not in CHECKED_FIELDS)
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


# ---------------------------------------------------------------- row parsing
def parse_row(
    obj: Any,
    source: str,
    now: datetime | None = None,
    rating_scale: Scale = "stars",
    redactor: Redactor | None = None,
    id_namespace: str = "",
    max_segment_keys: int = MAX_SEGMENT_KEYS,
    max_segment_value: int = MAX_SEGMENT_VALUE_CHARS,
    timezone: str | None = None,
) -> FeedbackEvent:
    """Validate one decoded row of the feedback format and return the event.

    `ts` must be ISO-8601 with a timezone (or without one where `timezone`,
    an IANA name, says where it was taken), or epoch seconds, milliseconds,
    microseconds or nanoseconds (a number, or a string of 9 digits or more;
    the unit by its size), from 1970 on and at most a day in
    the future (relative to `now`, default the current time). `rating` is read
    on `rating_scale`: `stars` (an integer 1-5, or a string or float holding
    one) becomes (s-1)/4; `thumbs` (true/false, up/down, 1/0) becomes 1.0/0.0
    and sets `thumbs_up` where the row has none; `unit` is a number in [0, 1].
    The raw value is kept. `thumbs_up` is a boolean (or a thumbs word) or null;
    `segment` maps strings to strings. Keys outside the format go into
    `metadata`. `redactor` replaces PII in every text (prompt, response,
    correction, segment, metadata) before the event id is computed. Without an
    `event_id` the id is a hash of `id_namespace` (the source's, see
    `FileSource.namespace`) and the (redacted) content; `source` (a file
    path) never enters it, so one event in two files of one source is
    stored once. `event_id`, `model_version` and segment keys are never
    altered: each must match its safe form (SAFE_ID, SAFE_VERSION,
    SEGMENT_KEY) and hold nothing `redactor` detects, else the row is
    quarantined; a segment has at most `max_segment_keys` keys and values of
    at most `max_segment_value` characters. Raises `RowError` and nothing else.
    """
    if not isinstance(obj, dict):
        raise RowError("(row)", "not a JSON object", type(obj).__name__)
    now = now or datetime.now(UTC)
    ts = _timestamp(obj.get("ts"), now, timezone)
    # Each field has a fast path for the common, valid value; anything else goes
    # through the full check, which raises the precise RowError (same order, same
    # reasons as checking every value the slow way).
    v = obj.get("prompt")
    # _plain_text inlined for the two long texts: the call costs as much as the test.
    if type(v) is str and v.isascii() and "\x00" not in v and len(v) <= MAX_TEXT_CHARS and v.strip():
        prompt = v
    else:
        prompt = _text("prompt", v, required=True)
    v = obj.get("response")
    if type(v) is str and v.isascii() and "\x00" not in v and len(v) <= MAX_TEXT_CHARS:
        response = v
    else:
        response = _text("response", v) or ""
    v = obj.get("correction")
    correction = (v or None) if v is None or _plain_text(v) else (_text("correction", v) or None)
    v = obj.get("model_version")
    model_version = v if _plain_text(v) else (_text("model_version", v, numbers=True) or "")
    if len(model_version) > MAX_VERSION_CHARS:
        raise RowError("model_version", f"longer than {MAX_VERSION_CHARS} characters")
    if not SAFE_VERSION.fullmatch(model_version):
        raise RowError("model_version", "not a safe version", SAFE_ID_TEXT)
    v = obj.get("rating")
    if rating_scale == "stars" and type(v) is int and 1 <= v <= 5:
        rating, rating_raw = _STARS[v]
    else:
        rating, rating_raw = _rating(v, rating_scale)
    v = obj.get("thumbs_up")
    thumbs = v if v is None or v is True or v is False else _thumbs(v)
    if thumbs is None and rating_scale == "thumbs" and rating is not None:
        thumbs = rating == 1.0
    segment = _segment(obj.get("segment"), max_segment_keys, max_segment_value)
    v = obj.get("latency_ms")
    latency = v if type(v) is float and 0.0 <= v < math.inf else _number("latency_ms", v)
    v = obj.get("tokens_in")
    tokens_in = v if type(v) is int and 0 <= v <= MAX_INT else _count("tokens_in", v)
    v = obj.get("tokens_out")
    tokens_out = v if type(v) is int and 0 <= v <= MAX_INT else _count("tokens_out", v)
    metadata = obj.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise RowError("metadata", "not an object")
    else:
        metadata = dict(metadata)
    if not obj.keys() <= KNOWN_FIELDS:
        for k, v in obj.items():
            if k not in KNOWN_FIELDS:
                metadata[k] = v
    if metadata:
        _check_json("metadata", metadata)
    if redactor is not None and redactor.enabled:
        # `screen` (None when user patterns must see every text) skips texts that
        # cannot hold a match without a call into the redactor.
        # The screen looks for single characters, so one search over all texts joined
        # says whether any of them needs the redactor.
        screen = redactor.screen
        if screen is None or screen("\n".join((prompt, response, correction or "", *segment.values()))):
            prompt, response = redactor.text(prompt), redactor.text(response)
            correction = redactor.text(correction) if correction else correction
            if segment:  # keys are field names; values may carry PII
                segment = {k: redactor.text(x) for k, x in segment.items()}
        metadata = redactor.value(metadata) if metadata else metadata
    given = obj.get("event_id")
    if given is not None:
        given = _event_id(given)
    if redactor is not None and redactor.enabled:
        _unflagged(redactor, given, model_version, segment)
    extra = _extra(obj, redactor) if EXTRA_FIELDS else None
    values = {
        "ts": ts,
        "model_version": model_version,
        "prompt": prompt,
        "response": response,
        "rating": rating,
        "rating_raw": rating_raw,
        "thumbs_up": thumbs,
        "correction": correction,
        "segment": segment,
        "latency_ms": latency,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "metadata": metadata,
    }
    if given is None:
        # The content id: the event's own fields but its normalised rating and its metadata.
        content = {k: v for k, v in values.items() if k not in _NOT_IN_ID}
        content["ts"] = ts.isoformat()
        if extra:  # a field given enters the id; one left out does not, so older ids stay as they were
            content.update({k: v for k, v in extra.items() if v is not None and v != {} and v != []})
        given = event_id_for(content, id_namespace)
    values["event_id"] = given
    if extra:
        values.update(extra)
    return checked_event(values)


def checked_event(values: dict[str, Any]) -> FeedbackEvent:
    """The event of field values checked already (every field, each more strictly than the model would).

    Skips pydantic's validation (and model_construct's bookkeeping), which
    would cost as much as the rest of the parse.
    """
    e = object.__new__(FeedbackEvent)
    object.__setattr__(e, "__dict__", values)
    object.__setattr__(e, "__pydantic_fields_set__", set(values))
    object.__setattr__(e, "__pydantic_extra__", None)
    object.__setattr__(e, "__pydantic_private__", None)
    return e


@cache
def _adapter(name: str) -> TypeAdapter[Any]:
    """The validator of one field's annotation, as the model would validate the field."""
    from pydantic import TypeAdapter

    annotation = FeedbackEvent.model_fields[name].annotation
    return TypeAdapter(Any if annotation is None else annotation)


def _extra(obj: dict[str, Any], redactor: Redactor | None) -> dict[str, Any]:
    """The values of EXTRA_FIELDS in a row: text checked as any text and redacted, others by the annotation.

    An absent or null value takes the field's default.
    """
    from pydantic import ValidationError

    out: dict[str, Any] = {}
    for name in EXTRA_FIELDS:
        v = obj.get(name)
        if v is None:
            out[name] = FeedbackEvent.model_fields[name].get_default(call_default_factory=True)
            continue
        if isinstance(v, str):
            v = _text(name, v)
            if redactor is not None and redactor.enabled and v:
                v = redactor.text(v)
        try:
            out[name] = _adapter(name).validate_python(v)
        except ValidationError as e:
            raise RowError(name, "invalid", e.errors()[0]["msg"][:120]) from None
    return out


# Fields that never enter a content id: the rating is derived from rating_raw, metadata is free-form.
_NOT_IN_ID = frozenset({"rating", "metadata"})


def event_id_for(content: dict[str, Any], namespace: str = "") -> str:
    """32 hex characters of SHA-256 over the canonical JSON of a source's namespace and an event's content.

    The namespace is a key of its own ("" leaves it out), so no content can
    imitate another namespace.
    """
    canon = json.dumps(
        {**content, "~namespace": namespace} if namespace else content,
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:32]


def _unflagged(redactor: Redactor, event_id: str | None, model_version: str, segment: dict[str, str]) -> None:
    """Raise RowError where the event id, the model version or a segment key holds PII or a secret.

    These are stored and logged as given, so a detected value is refused, not
    replaced: its kind is the detail, never the value.
    """
    screen = redactor.screen
    if event_id and (screen is None or screen(event_id)):
        kind = redactor.flags(event_id)
        if kind:
            raise RowError("event_id", "holds PII or a secret", kind)
    if model_version and not DOTTED_VERSION.fullmatch(model_version) and (screen is None or screen(model_version)):
        kind = redactor.flags(model_version)
        if kind:
            raise RowError("model_version", "holds PII or a secret", kind)
    for k in segment:
        if screen is None or screen(k):
            kind = redactor.flags(k)
            if kind:
                raise RowError("segment", "key holds PII or a secret", kind)


def _event_id(given: Any) -> str:
    if type(given) is str and SAFE_ID.fullmatch(given):
        return given
    if isinstance(given, int) and not isinstance(given, bool):
        given = str(given)
    eid = _text("event_id", given)
    if not eid or not eid.strip():
        raise RowError("event_id", "empty")
    if len(eid) > MAX_ID_CHARS:
        raise RowError("event_id", f"longer than {MAX_ID_CHARS} characters")
    if not SAFE_ID.fullmatch(eid):
        raise RowError("event_id", "not a safe id", SAFE_ID_TEXT)
    return eid


def _timestamp(v: Any, now: datetime, timezone: str | None = None) -> datetime:
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


def _plain_text(v: Any) -> bool:
    """True for a string that `_text` would return unchanged: ASCII (so valid UTF-8), no NUL, not too long."""
    return type(v) is str and v.isascii() and "\x00" not in v and len(v) <= MAX_TEXT_CHARS


def _text(name: str, v: Any, required: bool = False, numbers: bool = False) -> str | None:
    if v is None:
        if required:
            raise RowError(name, "missing")
        return None
    if numbers and isinstance(v, (int, float)) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str):
        raise RowError(name, "not a string")
    _check_str(name, v)
    if len(v) > MAX_TEXT_CHARS:
        raise RowError(name, f"longer than {MAX_TEXT_CHARS} characters", f"{len(v)} characters")
    if required and not v.strip():
        raise RowError(name, "empty")
    return v


def _check_str(name: str, s: str) -> None:
    # PostgreSQL text cannot hold NUL; a lone surrogate cannot be stored as UTF-8.
    if "\x00" in s:
        raise RowError(name, "contains a NUL character")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise RowError(name, "invalid Unicode (lone surrogate)") from None


def _check_json(name: str, v: Any, depth: int = 0) -> None:
    if depth > 32:
        raise RowError(name, "nested too deeply")
    if isinstance(v, str):
        _check_str(name, v)
    elif isinstance(v, float) and not math.isfinite(v):
        raise RowError(name, "non-finite number")
    elif isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise RowError(name, "non-string key")
            _check_str(name, k)
            _check_json(name, x, depth + 1)
    elif isinstance(v, list):
        for x in v:
            _check_json(name, x, depth + 1)
    elif v is not None and not isinstance(v, (bool, int, float)):
        raise RowError(name, "not JSON", type(v).__name__)


def _rating(v: Any, scale: Scale = "stars") -> tuple[float | None, str | None]:
    if v is None or (isinstance(v, str) and not v.strip() and scale != "stars"):
        return None, None
    raw = str(v)[:64]
    if scale == "thumbs":
        up = _thumbs(v, "rating", "not a thumbs value (up/down, true/false, 1/0)")
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


def _thumbs(v: Any, name: str = "thumbs_up", problem: str = "not a boolean") -> bool | None:
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


def _segment(v: Any, max_keys: int = MAX_SEGMENT_KEYS, max_value: int = MAX_SEGMENT_VALUE_CHARS) -> dict[str, str]:
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
        _check_str("segment", k)
        if not SEGMENT_KEY.fullmatch(k):
            raise RowError("segment", "key not a safe name", "letters, digits, _ . - and spaces, at most 64")
        _check_str("segment", x)
        if len(x) > max_value:
            raise RowError("segment", f"value longer than {max_value} characters", f"{len(x)} characters")
    return dict(v)


def _number(name: str, v: Any) -> float | None:
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


def _count(name: str, v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise RowError(name, "not an integer")
    if not 0 <= v <= MAX_INT:
        raise RowError(name, "out of range")
    return v
