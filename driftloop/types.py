"""Core types shared by every stage: typed, serialisable, logged verbatim.

Every stage of the loop speaks in these types, so a result can be logged to
MLflow exactly as it was computed and read back for an audit.

    >>> m = MetricResult(name="thumbs_up_rate", value=0.81, ci_low=0.79,
    ...                  ci_high=0.83, n=1200, higher_is_better=True,
    ...                  source="quality", segment={"topic": "billing"})
    >>> m.label()
    'thumbs_up_rate[topic=billing]'
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeedbackEvent(_Model):
    """One production interaction and what the user said about it."""

    event_id: str = Field(description="Unique id; a deterministic content hash where the source has none.")
    ts: datetime = Field(description="When the interaction happened; must be timezone-aware.")
    model_version: str = Field(default="", description="Registry version (or tag) that served the response.")
    prompt: str
    response: str = ""
    rating: float | None = Field(default=None, ge=0.0, le=1.0, description="Rating normalised to [0, 1].")
    rating_raw: str | None = Field(default=None, description="The rating exactly as the source gave it.")
    thumbs_up: bool | None = None
    correction: str | None = Field(default=None, description="The ideal response, where the user gave one.")
    segment: dict[str, str] = Field(default_factory=dict, description="Segment fields, e.g. topic, locale, tier.")
    latency_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ts")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None or v.utcoffset() is None:
            raise ValueError("timestamp has no timezone")
        return v


Source = Literal["drift", "quality", "bias", "benchmark"]


class MetricResult(_Model):
    """One figure with its uncertainty, where it came from and whether it passed."""

    name: str
    value: float | None = Field(description="Point estimate; None where the data are insufficient.")
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0
    higher_is_better: bool = True
    source: Source
    segment: dict[str, str] = Field(default_factory=dict)
    threshold: float | None = None
    passed: bool | None = Field(default=None, description="None means no verdict (e.g. insufficient data).")
    note: str = ""

    def label(self) -> str:
        """`name[k=v,...]`, the key under which the metric is logged."""
        if not self.segment:
            return self.name
        seg = ",".join(f"{k}={v}" for k, v in sorted(self.segment.items()))
        return f"{self.name}[{seg}]"


class SampleResults(_Model):
    """Per-item outcomes of one model on one task, keyed by a stable item id."""

    task: str
    model: str = Field(description="Model fingerprint or registry version the results belong to.")
    metric: str = Field(default="acc", description="The metric of record for this task.")
    items: dict[str, float] = Field(description="item id -> outcome (1.0/0.0 for accuracy).")
    detail: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Per-item extras: chosen answer, log-likelihoods.")
    task_hash: str = ""

    @property
    def mean(self) -> float | None:
        return sum(self.items.values()) / len(self.items) if self.items else None


class Action(str, Enum):
    NONE = "none"
    ALERT = "alert"
    RETRAIN = "retrain"
    PROMOTE = "promote"
    REJECT = "reject"
    ROLLBACK = "rollback"


class Decision(_Model):
    """What the policy decided, why (sentences with numbers), and on what evidence."""

    action: Action
    reasons: list[str] = Field(default_factory=list)
    evidence: list[MetricResult] = Field(default_factory=list)
    policy_version: str = ""

    def summary(self) -> str:
        return f"{self.action.value}: " + ("; ".join(self.reasons) if self.reasons else "no reason given")
