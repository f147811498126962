"""Config sections of trace sources: the OTLP receiver of `driftloop serve` and MLflow traces.

Re-exported by `driftloop.core.config_ingest` (and so by `driftloop.core.config`).

    >>> TracesConfig().join_window_seconds
    3600.0
    >>> MlflowTracesSource(experiment="chatbot").key()
    'mlflow_traces:chatbot'
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from driftloop.core.config_base import _Section


class TracesConfig(_Section):
    """`POST /v1/traces` (OTLP/HTTP) and the join of ratings to spans by trace id."""

    join_window_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How long (seconds) a rating posted to /v1/feedback with a `trace_id` waits for its span; after that it is quarantined (`trace_id: no span within the join window`). A rating for a span already stored joins at once, however old the span.",
    )
    segment_attributes: dict[str, str] = Field(
        default_factory=dict,
        description="Span or resource attribute -> segment key, e.g. `{gen_ai.conversation.id: conversation, user.id: user, service.name: service}`. Conversation and user ids are kept in the event's metadata either way; name them here to monitor them as segments.",
    )
    operations: list[str] = Field(
        default=["chat", "text_completion", "completion", "generate_content"],
        description="`gen_ai.operation.name` values that become feedback events; other GenAI operations (embeddings, tool calls, agents) are counted and dropped, as are spans that are not GenAI or OpenInference LLM spans.",
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Largest OTLP request body (bytes, after gzip decompression); a larger one gets 413.",
    )
    parse_workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Processes that decode, map and redact OTLP export bodies beside the API's own process, which keeps HTTP and the store writes; 0: in the API process. Each adds about one core's worth of spans per second (and its memory); a worker that dies is replaced and its request parsed in the API process.",
    )


class MlflowTracesSource(_Section):
    """Traces logged to an MLflow tracking store, with their assessments (human feedback, expectations)."""

    kind: Literal["mlflow_traces"] = "mlflow_traces"
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI to read; default: the config's own (`tracking.uri`)."
    )
    experiment: str = Field(description="Name of the experiment whose traces are read.")
    name: str | None = Field(
        default=None, description="Stable name of the source's checkpoint; default: the experiment's name."
    )
    batch_traces: int = Field(default=500, ge=1, description="Traces per transaction (and per MLflow search page).")
    rating_scale: Literal["stars", "thumbs", "unit"] = Field(
        default="thumbs",
        description="Scale of numeric feedback values: `thumbs` (true/false, 1/0), `stars` (1-5) or `unit` (0-1). A boolean feedback value is always a thumb.",
    )
    feedback_name: str | None = Field(
        default=None,
        description="Name of the feedback assessment that is the rating (e.g. `user_satisfaction`); default: the newest human feedback of any name.",
    )
    expectation_name: str | None = Field(
        default=None,
        description="Name of the expectation assessment that is the correction (e.g. `expected_response`); default: the newest expectation of any name whose value is text.",
    )
    segment_fields: list[str] = Field(
        default_factory=list,
        description="Trace tags or metadata keys copied into the event's segment, e.g. `[mlflow.trace.user, environment]`.",
    )
    feedback_lookback_hours: float = Field(
        default=24.0,
        ge=0,
        description="Feedback logged on a trace after a run read it is applied to its event on a later run, for traces up to this many hours older than the watermark; 0: only feedback present when the trace is read.",
    )

    def key(self) -> str:
        """Checkpoint key and id namespace: `mlflow_traces:<name or experiment>`."""
        return f"mlflow_traces:{self.name or self.experiment}"
