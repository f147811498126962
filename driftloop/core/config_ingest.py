"""Config sections of ingestion: sources (files, SQL), field mapping, PII redaction and the HTTP API.

Part of the one configuration root in `driftloop.core.config`, which re-exports
every name here.

    >>> FileSource(path="exports/*.jsonl").namespace()
    'files:exports/*.jsonl'
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, SecretStr, Tag, model_validator

from driftloop.core.config_base import _Section
from driftloop.core.config_limits import ApiLimits
from driftloop.core.config_traces import MlflowTracesSource, TracesConfig

# FeedbackEvent fields that a row may lack even where the mapping names them: feedback
# (a rating, a thumb, a correction) and telemetry arrive on some rows only.
OPTIONAL_FIELDS = frozenset(
    {"rating", "thumbs_up", "correction", "latency_ms", "tokens_in", "tokens_out", "segment", "metadata"}
)


class FieldMapping(_Section):
    """How a team's own field names map onto `FeedbackEvent` fields.

    A name in the mapping is a promise that the rows carry that field, so a
    misspelt name must never store rows with an empty response or no rating:
    a mapped field that no row of a run's first batch holds stops the run
    before anything is stored, and a row without a mapped field that every
    event needs is quarantined (see `fields`).
    """

    fields: dict[str, str] = Field(
        default_factory=dict,
        description="FeedbackEvent field -> the source's field name, e.g. `{prompt: question, ts: created_at}`; unmapped fields keep their own names. A row that lacks a mapped field is quarantined (`mapped field 'answer' (-> response) missing`), unless it maps an optional field (rating, thumbs_up, correction, latency_ms, tokens_in, tokens_out, metadata), which may be missing from some rows; a null value is a value, not a missing field. A mapped field (or segment field) that no row of a run's first batch holds is a typo: the run stops with an error naming the source and the field, and stores nothing. An optional one is exempt when the run resumes a source with less than a batch of new rows, which may all lack it.",
    )
    rating_scale: Literal["stars", "thumbs", "unit"] = Field(
        default="stars",
        description="Scale of the source's rating: `stars` (1-5, -> (s-1)/4), `thumbs` (up/down, true/false, 1/0 -> 1.0/0.0, also sets thumbs_up) or `unit` (already 0-1). The raw value is kept in rating_raw.",
    )
    segment_fields: list[str] = Field(
        default_factory=list,
        description="Source fields copied into the event's segment (as strings), e.g. `[locale, tier]`. A row may lack one; one that no row of a run's first batch holds is a typo (see `fields`).",
    )
    timezone: str | None = Field(
        default=None,
        description="IANA time zone (e.g. `Europe/Berlin`) in which timestamps without an offset were written; without it such a row is quarantined (`ts: no timezone`). Timestamps with an offset, and epoch numbers (seconds, milliseconds, microseconds or nanoseconds, told apart by size), need none.",
    )
    segment_max_keys: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Most keys in one event's segment; a row with more is quarantined (`segment: more than N keys`). Each key and value names a metric series and monitor artifacts.",
    )
    segment_value_max_chars: int = Field(
        default=256,
        ge=1,
        le=65536,
        description="Longest segment value (characters); a row with a longer one is quarantined (`segment: value longer than N characters`). Keys are names of at most 64 letters, digits, `_`, `.`, `-` and spaces.",
    )

    @model_validator(mode="after")
    def _known(self) -> FieldMapping:
        from driftloop.core.types import FeedbackEvent

        unknown = sorted(set(self.fields) - set(FeedbackEvent.model_fields))
        if unknown:
            raise ValueError(f"fields: {unknown[0]!r} is not a FeedbackEvent field")
        if self.timezone is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"timezone: {self.timezone!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
        return self


class FileSource(_Section):
    kind: Literal["files"] = "files"
    path: str = Field(
        description="File path or glob: JSONL, CSV or Parquet; JSONL and CSV may be gzip-compressed (`.gz`)."
    )
    format: Literal["auto", "jsonl", "csv", "parquet"] = Field(
        default="auto",
        description="File format; `auto` decides by the name (.csv, .parquet, else JSONL), ignoring a trailing .gz.",
    )
    mapping: FieldMapping = FieldMapping()
    id_namespace: str | None = Field(
        default=None,
        min_length=1,
        description="Namespace of the ids of events that carry no `event_id`: each is a hash of this and the content. Sources that deliver the same events (an export and the HTTP API, say) should share one, so each event is stored once. Default: `files:<path>`, the glob as written, so overlapping exports it matches store each event once; once its files are read, an edited glob keeps the namespace they were read under (see the ingest how-to).",
    )

    def namespace(self) -> str:
        """The namespace of this source's content ids."""
        return self.id_namespace or f"files:{self.path}"


class SqlSource(_Section):
    kind: Literal["sql"] = "sql"
    url: str = Field(description="SQLAlchemy URL of the team's database (read only).")
    table: str | None = Field(default=None, description="Table to read; give this or `query`.")
    query: str | None = Field(
        default=None, description="SELECT whose rows are read (wrapped as a subquery); give this or `table`."
    )
    watermark: str = Field(
        description="Column that only grows (a timestamp or an increasing id); rows above the last committed value are read."
    )
    name: str | None = Field(
        default=None,
        description="Stable name of the source's checkpoint; default: the table name or a hash of the query.",
    )
    batch_rows: int = Field(default=5000, ge=1, description="Rows per transaction.")
    mapping: FieldMapping = FieldMapping()
    id_namespace: str | None = Field(
        default=None,
        min_length=1,
        description="Namespace of the ids of events that carry no `event_id`: each is a hash of this and the content. Sources that deliver the same events (an export and the HTTP API, say) should share one, so each event is stored once. Default: `sql:<name>`, the checkpoint's name.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of `table` and `query`")
        return self


def _source_kind(v: Any) -> str:
    return v.get("kind", "files") if isinstance(v, dict) else getattr(v, "kind", "files")


AnySource = Annotated[
    Annotated[FileSource, Tag("files")]
    | Annotated[SqlSource, Tag("sql")]
    | Annotated[MlflowTracesSource, Tag("mlflow_traces")],
    Discriminator(_source_kind),
]


class RedactionConfig(_Section):
    enabled: bool = Field(default=True, description="Redact PII from every text field before anything is stored.")
    builtin: list[Literal["email", "phone", "card", "ip", "key", "jwt", "iban"]] = Field(
        default=["email", "phone", "card", "ip", "key", "jwt", "iban"],
        description="Built-in detectors to apply: e-mail addresses, phone numbers, Luhn-checked card numbers, IP addresses, API keys and tokens of well-known shapes (`sk-...`, `ghp_...`, `AKIA...`, `xoxb-...`, `AIza...`), JSON Web Tokens and mod-97-checked IBANs.",
    )
    patterns: dict[str, str] = Field(
        default_factory=dict, description="Extra PII patterns: name -> Python regex; matches become `[NAME]`."
    )
    phone_regions: list[str] = Field(
        default=["US", "GB", "DE", "FR", "IN", "BR", "JP", "AU"],
        description="Countries (ISO 3166 codes) whose national phone formats are recognised, e.g. `020 7946 0958` in GB; a number with a +country code is recognised for every country. Each candidate is checked against libphonenumber's numbering plan of the country, as written there, so years, ranges and order numbers are left alone.",
    )

    @model_validator(mode="after")
    def _compile(self) -> RedactionConfig:
        import re

        import phonenumbers

        for code in self.phone_regions:
            if code not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(
                    f"phone_regions: {code!r} is not a country code libphonenumber knows (e.g. GB, DE, US)"
                )
        for name, pat in self.patterns.items():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                raise ValueError(f"patterns: name {name!r} must be letters, digits and _")
            try:
                re.compile(pat)
            except re.error as e:
                raise ValueError(f"patterns.{name}: not a valid regex ({e})") from None
        return self


Scope = Literal["ingest", "evaluate", "admin"]
MIN_TOKEN_CHARS = 16  # a bearer token shorter than this is refused at config load


class ApiToken(_Section):
    """One bearer token and what it may do; the token itself is read from the environment or a file."""

    token_env: str | None = Field(
        default=None, description="Environment variable holding the token (give this or `token_file`)."
    )
    token_file: str | None = Field(
        default=None,
        description="File holding the token, surrounding whitespace ignored (relative to the config file; give this or `token_env`).",
    )
    scopes: list[Scope] = Field(
        min_length=1,
        description="What the token may do: `ingest` (POST /v1/feedback and /v1/traces), `evaluate` (POST and GET /v1/evaluations), `admin` (everything, the API docs included).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ApiToken:
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("give exactly one of token_env and token_file (a token is never written in the config)")
        return self


class ApiConfig(_Section):
    host: str = Field(default="127.0.0.1", description="Address `driftloop serve` listens on.")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port of `driftloop serve`.")
    token: SecretStr | None = Field(
        default=None,
        description="Bearer token with every scope (ingest, evaluate, admin); set it here or in DRIFTLOOP_API__TOKEN. At least 16 characters. Without it and without `tokens` the server refuses to start.",
    )
    tokens: list[ApiToken] = Field(
        default_factory=list,
        description="Further bearer tokens, each with its scopes, e.g. `[{token_env: FEEDBACK_TOKEN, scopes: [ingest]}]`, so a client that posts feedback cannot start evaluations.",
    )
    docs: bool = Field(
        default=False,
        description="Serve the API's documentation (/docs, /redoc, /openapi.json); off, those routes answer 404.",
    )
    model_roots: list[str] = Field(
        default_factory=list,
        description="Folders (relative to the config file) under which POST /v1/evaluations may name a local model folder; empty: registry aliases and version numbers only.",
    )
    max_evaluation_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest body (bytes) of POST /v1/evaluations and of an MLflow webhook delivery; a larger one gets 413.",
    )
    max_evaluation_window_days: float = Field(
        default=366.0,
        gt=0,
        description="Longest feedback window (days) an on-demand evaluation may ask for; a longer one gets 422.",
    )
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest request body (bytes); a larger one gets 413."
    )
    max_batch: int = Field(default=1000, ge=1, description="Most events in one request; more gets 413.")
    mapping: FieldMapping = FieldMapping()
    id_namespace: str = Field(
        default="http:/v1/feedback",
        min_length=1,
        description="Namespace of the ids of events that carry no `event_id`: each is a hash of this and the content. Sources that deliver the same events (an export and the HTTP API, say) should share one, so each event is stored once.",
    )
    max_concurrent_evaluations: int = Field(
        default=1,
        ge=1,
        description="On-demand evaluations (POST /v1/evaluations, MLflow webhook) that run at once in the API process; each loads a model and runs lm-eval.",
    )
    max_queued_evaluations: int = Field(
        default=8, ge=0, description="Evaluations that may wait for a free slot; beyond that a request gets 429."
    )
    evaluation_heartbeat_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often the API process marks each of its queued and running evaluations alive (MLflow tag `driftloop.heartbeat`).",
    )
    evaluation_lost_after_seconds: float = Field(
        default=180.0,
        gt=0,
        description="A queued or running evaluation whose heartbeat is older than this is answered as failed (the API process that held it stopped) and its run is marked KILLED; more than evaluation_heartbeat_seconds.",
    )
    mlflow_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Secret of the MLflow registry webhook (the `secret` given to create_webhook); set it here or in DRIFTLOOP_API__MLFLOW_WEBHOOK_SECRET. Without one POST /v1/hooks/mlflow answers 503.",
    )
    mlflow_webhook_tolerance_s: int = Field(
        default=300,
        ge=1,
        description="Largest age or clock skew (s) of a webhook's X-MLflow-Timestamp; an older delivery is refused as a replay.",
    )
    limits: ApiLimits = Field(
        default_factory=ApiLimits,
        description="Lockout after failed authentication, and timeouts and bounds against slow clients.",
    )
    traces: TracesConfig = Field(
        default_factory=TracesConfig,
        description="POST /v1/traces (OTLP/HTTP): which spans become feedback events, and how long a rating waits for its span.",
    )
    mlflow_webhook_aliases: list[str] = Field(
        default_factory=list,
        description="Aliases whose creation or move in the registry (model_version_alias.created) also starts an evaluation, e.g. [champion] to evaluate a version promoted by hand in the MLflow UI. model_version.created always does.",
    )

    @model_validator(mode="after")
    def _heartbeat(self) -> ApiConfig:
        from pydantic_core import PydanticCustomError

        if self.token is not None and len(self.token.get_secret_value().strip()) < MIN_TOKEN_CHARS:
            raise PydanticCustomError(
                "api",
                "token: shorter than {n} characters; use a long random one (e.g. openssl rand -hex 32)",
                {"n": MIN_TOKEN_CHARS},
            )
        if self.evaluation_lost_after_seconds <= self.evaluation_heartbeat_seconds:
            raise PydanticCustomError(
                "api",
                "evaluation_lost_after_seconds ({lost}) must exceed evaluation_heartbeat_seconds ({hb})",
                {"lost": f"{self.evaluation_lost_after_seconds:g}", "hb": f"{self.evaluation_heartbeat_seconds:g}"},
            )
        return self
