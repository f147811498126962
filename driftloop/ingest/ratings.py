"""Ratings that name a trace: feedback sent after (or before) the span of the answer it rates.

An application that traces its LLM calls with OpenTelemetry (or MLflow)
knows the trace id of the answer a user rated, not the prompt. A row with a
`trace_id` and no `prompt` is such a rating: `parse_rating` checks it and
gives a `TraceRating`, which the store joins to the event of that trace's
span (`store.traces`) whichever arrives first.

    >>> r = parse_rating({"trace_id": "0af7651916cd43dd8448eb211c80319c", "rating": 1}, "thumbs", Redactor())
    >>> r.rating, r.thumbs_up, r.span_id
    (1.0, True, '')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from driftloop.ingest.redact import Redactor
from driftloop.ingest.values import RowError, Scale
from driftloop.ingest.values import rating as _rating
from driftloop.ingest.values import text as _text
from driftloop.ingest.values import thumbs as _thumbs

TRACE_ID = re.compile(r"[0-9a-f]{32}")
SPAN_ID = re.compile(r"[0-9a-f]{16}")
# MLflow trace ids (`tr-` and 32 hex) are accepted as they are: they key MLflow-sourced events.
MLFLOW_TRACE_ID = re.compile(r"tr-[0-9a-f]{32}")


@dataclass(frozen=True)
class TraceRating:
    """A rating, thumb or correction for the span `span_id` of trace `trace_id` ("" : the trace's answer)."""

    trace_id: str
    span_id: str
    rating: float | None
    rating_raw: str | None
    thumbs_up: bool | None
    correction: str | None


def is_rating(row: Any) -> bool:
    """True for a row that rates a traced answer: a `trace_id` and no `prompt`."""
    return isinstance(row, dict) and "trace_id" in row and row.get("prompt") is None


def parse_rating(row: dict[str, Any], scale: Scale, redactor: Redactor | None = None) -> TraceRating:
    """The rating in `row` (rating on `scale`, thumbs_up, correction); raises RowError for any fault.

    `trace_id` is 32 hex digits (any case; W3C trace context) or an MLflow
    trace id (`tr-...`); `span_id`, optional, 16 hex digits. The row must give
    at least one of rating, thumbs_up and correction. The correction is
    redacted like any text.
    """
    trace_id = _id("trace_id", row.get("trace_id"), required=True)
    span_id = _id("span_id", row.get("span_id"), required=False)
    rating, raw = _rating(row.get("rating"), scale)
    thumbs = _thumbs(row.get("thumbs_up"))
    if thumbs is None and scale == "thumbs" and rating is not None:
        thumbs = rating == 1.0
    correction = _text("correction", row.get("correction")) or None
    if correction and redactor is not None and redactor.enabled:
        correction = redactor.text(correction)
    if rating is None and thumbs is None and correction is None:
        raise RowError("rating", "missing", "a row with a trace_id must give a rating, thumbs_up or correction")
    return TraceRating(trace_id, span_id, rating, raw, thumbs, correction)


def _id(name: str, v: Any, required: bool) -> str:
    if v is None or v == "":
        if required:
            raise RowError(name, "missing")
        return ""
    if not isinstance(v, str):
        raise RowError(name, "not a string")
    s = v.strip().lower()
    pattern = TRACE_ID if name == "trace_id" else SPAN_ID
    if pattern.fullmatch(s) and s.strip("0"):
        return s
    if name == "trace_id" and MLFLOW_TRACE_ID.fullmatch(s):
        return s
    what = "32 hex digits" if name == "trace_id" else "16 hex digits"
    raise RowError(name, f"not {what}", v[:40])
