"""The `mlflow_traces` source: traces logged to MLflow, with their human feedback, as feedback events.

Each trace becomes one event (id: the trace id): the prompt from the root
span's inputs (the last user message of a chat, or a `prompt`/`question`/
`query`/`input` field, or the text itself), the response from its outputs,
latency, token usage, and the newest valid human feedback as the rating
(`mlflow.log_feedback`; a boolean value is a thumb) and the newest text
expectation as the correction (`mlflow.log_expectation`). Traces are read
in request-time order above the last committed watermark, in batches that
commit with the watermark (`files.run_batches`: a SIGKILL loses nothing, a
rerun adds nothing, and `read == accepted + duplicates + quarantined`). A
trace still in progress stops the run before it, so its watermark is not
passed until it ends. Feedback logged later on a trace read already is
applied to its event on the next run, for traces up to
`feedback_lookback_hours` old (`store.traces.add_ratings`).

    >>> report = ingest_mlflow_traces(store, MlflowTracesSource(experiment="chatbot"), "sqlite:///mlflow.db")
    >>> report.summary()
    'read 40, accepted 40, duplicates 0, quarantined 0'
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from driftloop.core.config_ingest import FieldMapping
from driftloop.core.config_traces import MlflowTracesSource
from driftloop.ingest.files import Record, run_batches
from driftloop.ingest.otlp import prompt_of, text_of
from driftloop.ingest.pipeline import FileReport, IngestReport, Progress, RowParser
from driftloop.ingest.ratings import TraceRating
from driftloop.ingest.redact import Redactor
from driftloop.ingest.values import RowError
from driftloop.ingest.values import rating as _rating
from driftloop.ingest.values import text as _text
from driftloop.store import Store
from driftloop.store.traces import add_ratings
from driftloop.tracking.traces import AssessmentRecord, TraceRecord, read_traces

_LOG = logging.getLogger("driftloop.ingest")
IN_PROGRESS_WAIT_MS = 3_600_000  # a trace in progress for longer than this (1 h) is read as it is
PROMPT_KEYS = ("prompt", "question", "query", "input", "inputs", "text", "message", "messages")
RESPONSE_KEYS = ("output", "outputs", "response", "answer", "content", "text", "result")


def ingest_mlflow_traces(
    store: Store,
    src: MlflowTracesSource,
    tracking_uri: str,
    redactor: Redactor | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Read the experiment's traces above the source's watermark into the store; return the report.

    Raises InputError when the tracking store or the experiment cannot be read; nothing is written then.
    """
    redactor = redactor if redactor is not None else Redactor()
    before = Counter(redactor.counts)
    key = src.key()
    mapping = FieldMapping(rating_scale=src.rating_scale)
    parser = RowParser(mapping, redactor, id_namespace=key)
    report, fr = IngestReport(), FileReport()
    raw = store.get_checkpoint(key)
    last = int(raw) if raw else None
    fr.resumed_from = "" if last is None else str(last)
    uri = src.tracking_uri or tracking_uri
    traces = read_traces(uri, src.experiment, last, src.batch_traces)
    run_batches(store, _records(traces, src), last, parser, key, key, str, fr, report.reasons, src.batch_traces)
    report.add(key, fr)
    if last is not None and src.feedback_lookback_hours > 0:
        since = last - int(src.feedback_lookback_hours * 3_600_000)
        late = [
            rate for t in read_traces(uri, src.experiment, since, src.batch_traces, last) if (rate := _late(t, src))
        ]
        joined = add_ratings(store, late, key, wait=False).joined if late else 0
        if joined:
            _LOG.info("%s: feedback of %d earlier trace(s) applied", key, joined)
    report.redacted = redactor.counts - before
    return report


def _records(traces: Iterator[TraceRecord], src: MlflowTracesSource) -> Iterator[Record]:
    """Traces as records: (watermark after it, or None where the next trace shares its time; row; raw; key)."""
    now_ms = int(time.time() * 1000)
    prev: TraceRecord | None = None
    for t in traces:
        if t.state == "IN_PROGRESS" and now_ms - t.request_time_ms < IN_PROGRESS_WAIT_MS:
            break  # not ended yet: the watermark must not pass it
        if prev is not None:
            yield (prev.request_time_ms if t.request_time_ms != prev.request_time_ms else None), *_row(prev, src)
        prev = t
    if prev is not None:
        yield prev.request_time_ms, *_row(prev, src)


def _row(t: TraceRecord, src: MlflowTracesSource) -> tuple[Any, str, str]:
    """(the feedback row of a trace, or the RowError that quarantines it; its raw text; its key)."""
    raw = json.dumps({"trace_id": t.trace_id, "request": t.request, "response": t.response}, ensure_ascii=False)
    key = json.dumps({"trace_id": t.trace_id})
    try:
        return map_trace(t, src), raw, key
    except RowError as e:
        return e, raw, key


def map_trace(t: TraceRecord, src: MlflowTracesSource) -> dict[str, Any]:
    """The feedback row of one trace (raises RowError for a feedback value that is not a rating)."""
    usage = _json(t.metadata.get("mlflow.trace.tokenUsage"))
    row: dict[str, Any] = {
        "event_id": t.trace_id,
        "ts": datetime.fromtimestamp(t.request_time_ms / 1000, UTC).isoformat(),
        "prompt": _side(t.request, PROMPT_KEYS, prompt=True),
        "response": _side(t.response, RESPONSE_KEYS, prompt=False) or "",
        "latency_ms": float(t.duration_ms) if t.duration_ms is not None else None,
        "model_version": t.metadata.get("mlflow.modelId") or None,
        "metadata": {"trace_id": t.trace_id, "experiment": src.experiment, "state": t.state},
    }
    if isinstance(usage, dict):
        row["tokens_in"], row["tokens_out"] = usage.get("input_tokens"), usage.get("output_tokens")
    name = t.tags.get("mlflow.traceName")
    if name:
        row["metadata"]["trace_name"] = name
    segment = {f: str(v) for f in src.segment_fields if (v := t.tags.get(f, t.metadata.get(f))) not in (None, "")}
    if segment:
        row["segment"] = segment
    fb = _newest(t.assessments, "feedback", src.feedback_name, human=True)
    if fb is not None:
        _put_rating(row, fb.value, src.rating_scale)
    ex = _newest(t.assessments, "expectation", src.expectation_name, human=False, text=True)
    if ex is not None:
        row["correction"] = ex.value
    return {k: v for k, v in row.items() if v is not None}


def _late(t: TraceRecord, src: MlflowTracesSource) -> TraceRating | None:
    """The feedback of a trace read on an earlier run, as a rating to join to its event; None if it has none."""
    fb = _newest(t.assessments, "feedback", src.feedback_name, human=True)
    ex = _newest(t.assessments, "expectation", src.expectation_name, human=False, text=True)
    if fb is None and ex is None:
        return None
    row: dict[str, Any] = {}
    try:
        if fb is not None:
            _put_rating(row, fb.value, src.rating_scale)
        rating, raw = _rating(row.get("rating"), src.rating_scale)
        correction = _text("correction", ex.value) if ex is not None else None
    except RowError:
        return None  # the row itself was quarantined with this reason
    thumbs = row.get("thumbs_up")
    if thumbs is None and src.rating_scale == "thumbs" and rating is not None:
        thumbs = rating == 1.0
    return TraceRating(t.trace_id, "", rating, raw, thumbs, correction)


def _put_rating(row: dict[str, Any], value: Any, scale: str) -> None:
    if isinstance(value, bool):
        row["thumbs_up"] = value
        if scale == "thumbs":
            row["rating"] = value
    else:
        row["rating"] = value


def _newest(
    items: tuple[AssessmentRecord, ...], kind: str, name: str | None, human: bool, text: bool = False
) -> AssessmentRecord | None:
    pick = [
        a
        for a in items
        if a.kind == kind
        and a.valid
        and (name is None or a.name == name)
        and (not human or a.source_type == "HUMAN")
        and (not text or isinstance(a.value, str))
    ]
    return max(pick, key=lambda a: a.time_ms) if pick else None


def _side(doc: str | None, keys: tuple[str, ...], prompt: bool) -> str | None:
    """The text of a root span's inputs (prompt) or outputs (response), from the shapes apps commonly log."""
    v = _json(doc) if doc is not None else None
    if v is None:
        return doc
    if isinstance(v, str):
        return v
    if isinstance(v, dict):
        if prompt and isinstance(v.get("messages"), list):
            return prompt_of(v["messages"])
        if not prompt and isinstance(v.get("choices"), list) and v["choices"]:
            return text_of(v["choices"][0]) or None
        for k in keys:
            if v.get(k) is not None:
                x = v[k]
                return prompt_of(x) if prompt and isinstance(x, list) else text_of(x) or json.dumps(x)
        strings = [x for x in v.values() if isinstance(x, str)]
        if len(strings) == 1:
            return strings[0]
    if isinstance(v, list) and prompt:
        return prompt_of(v)
    return json.dumps(v, ensure_ascii=False)


def _json(s: Any) -> Any:
    if not isinstance(s, str):
        return s
    try:
        return json.loads(s)
    except ValueError:
        return None
