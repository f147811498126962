"""MLflow traces and their assessments, read page by page as plain records (no MLflow types leave here).

The `mlflow_traces` source (`driftloop.ingest.mlflow_traces`) maps these
records to feedback events; this module only searches the tracking store.

    >>> for rec in read_traces("sqlite:///mlflow.db", "chatbot", after_ms=0, page_size=500):
    ...     rec.trace_id, rec.request_time_ms, [a.name for a in rec.assessments]
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from driftloop.core.errors import InputError


@dataclass(frozen=True)
class AssessmentRecord:
    """One assessment of a trace: human (or judge, or code) feedback, or an expectation."""

    name: str
    kind: str  # "feedback" or "expectation"
    source_type: str  # HUMAN, LLM_JUDGE, CODE
    value: Any
    time_ms: int
    valid: bool = True


@dataclass(frozen=True)
class TraceRecord:
    """A trace as the mapping needs it: ids, times, the root span's inputs and outputs, tags, assessments."""

    trace_id: str
    request_time_ms: int
    duration_ms: int | None
    state: str
    request: str | None
    response: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    assessments: tuple[AssessmentRecord, ...] = ()


def read_traces(
    tracking_uri: str, experiment: str, after_ms: int | None, page_size: int, until_ms: int | None = None
) -> Iterator[TraceRecord]:
    """The experiment's traces whose request time is above `after_ms` (and at most `until_ms`), oldest first.

    Raises InputError when the tracking store cannot be read or has no such experiment.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        exp = client.get_experiment_by_name(experiment)
    except MlflowException as e:
        raise InputError(f"mlflow_traces source: cannot read {tracking_uri}: {str(e).splitlines()[0][:200]}") from None
    if exp is None:
        raise InputError(f"mlflow_traces source: no experiment {experiment!r} at {tracking_uri}")
    conds = []
    if after_ms is not None:
        conds.append(f"trace.timestamp_ms > {int(after_ms)}")
    if until_ms is not None:
        conds.append(f"trace.timestamp_ms <= {int(until_ms)}")
    token: str | None = None
    while True:
        try:
            page = client.search_traces(
                locations=[exp.experiment_id],
                filter_string=" AND ".join(conds) or None,
                order_by=["timestamp_ms ASC"],
                max_results=page_size,
                page_token=token,
                include_spans=True,  # the root span's inputs and outputs whole; the previews are cut
            )
        except MlflowException as e:
            raise InputError(f"mlflow_traces source {experiment}: {str(e).splitlines()[0][:200]}") from None
        for t in page:
            yield _record(t)
        token = page.token
        if not token:
            return


def _record(t: Any) -> TraceRecord:
    info = t.info
    meta = dict(info.trace_metadata or {})
    assessments = []
    for a in info.assessments or []:
        if a.feedback is not None:
            kind, value = "feedback", a.feedback.value
        elif a.expectation is not None:
            kind, value = "expectation", a.expectation.value
        else:
            continue
        source = a.source.source_type if a.source is not None else ""
        assessments.append(
            AssessmentRecord(
                a.name,
                kind,
                str(source),
                value,
                int(a.last_update_time_ms or a.create_time_ms or 0),
                bool(getattr(a, "valid", True) is not False),
            )
        )
    request, response = (
        meta.get("mlflow.traceInputs", info.request_preview),
        meta.get("mlflow.traceOutputs", info.response_preview),
    )
    root = next((s for s in (t.data.spans if t.data else []) if s.parent_id is None), None)
    if root is not None:
        if root.inputs is not None:
            request = json.dumps(root.inputs, default=str, ensure_ascii=False)
        if root.outputs is not None:
            response = json.dumps(root.outputs, default=str, ensure_ascii=False)
    return TraceRecord(
        trace_id=info.trace_id,
        request_time_ms=int(info.request_time),
        duration_ms=None if info.execution_duration is None else int(info.execution_duration),
        state=str(getattr(info.state, "value", info.state)),
        request=request,
        response=response,
        metadata=meta,
        tags=dict(info.tags or {}),
        assessments=tuple(assessments),
    )
