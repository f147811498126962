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
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from driftloop.core.types import FeedbackEvent
from driftloop.ingest.values import (
    MAX_INT,
    MAX_SEGMENT_KEYS,
    MAX_SEGMENT_VALUE_CHARS,
    MAX_TEXT_CHARS,
    RowError,
    Scale,
)
from driftloop.ingest.values import check_json as _check_json
from driftloop.ingest.values import count as _count
from driftloop.ingest.values import number as _number
from driftloop.ingest.values import plain_text as _plain_text
from driftloop.ingest.values import rating as _rating
from driftloop.ingest.values import segment as _segment
from driftloop.ingest.values import text as _text
from driftloop.ingest.values import thumbs as _thumbs
from driftloop.ingest.values import timestamp as _timestamp

if TYPE_CHECKING:
    from pydantic import TypeAdapter

    from driftloop.ingest.redact import Redactor

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
# The OTLP receiver's event ids, otel:<trace id>:<span id> in lowercase hex, skip the built-in
# detectors' check (about 14 us per id): they hold no '@', no short hex group between colons, no
# capitals and no secret's start, so the one match possible is a span id of 16 digits taken for a
# Luhn-valid card (about 1 span in 20,000), which is a random id, never a card.
RECEIVER_ID = re.compile(r"otel:[0-9a-f]{32}:[0-9a-f]{16}")
SAFE_ID_TEXT = "letters, digits and . _ : @ / + - only"
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
_STARS = {s: ((s - 1) / 4, str(s)) for s in range(1, 6)}  # stars -> (rating, raw)


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
    # (A config's own patterns still see every id.)
    if event_id and (screen is None or (screen(event_id) and not RECEIVER_ID.fullmatch(event_id))):
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
