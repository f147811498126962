"""Core types shared by every stage: typed, serialisable, logged verbatim.

Every stage of the loop speaks in these types, so a result can be logged to
MLflow exactly as it was computed and read back for an audit.

    >>> m = MetricResult(name="thumbs_up_rate", value=0.81, ci_low=0.79,
    ...                  ci_high=0.83, n=1200, direction="higher",
    ...                  source="quality", segment={"topic": "billing"})
    >>> m.label()
    'thumbs_up_rate[topic=billing]'
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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
Direction = Literal["higher", "lower"]


def _legacy_direction(data: Any) -> Any:
    """Records written before metrics carried a direction said `higher_is_better`; read them as such."""
    if isinstance(data, dict) and "higher_is_better" in data:
        data = dict(data)
        hib = data.pop("higher_is_better")
        data.setdefault("direction", "higher" if hib else "lower")
    return data


class MetricTolerance(_Model):
    """A metric's target, margins and bounds: what `MetricSpec` and a benchmark task's config share."""

    target: float | None = Field(
        default=None,
        description="The ideal value; the distance |value - target| must not grow (e.g. 0.5 for a stereotype-choice rate). Replaces the direction.",
    )
    margin: float | None = Field(
        default=None,
        ge=0,
        description="Non-inferiority margin in the metric's own units; default: the suite role's margin (metrics bounded in [0, 1] only).",
    )
    relative_margin: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Non-inferiority margin as a fraction of the champion's score (of its distance to `target` for target metrics); overrides `margin`.",
    )
    bounds: tuple[float | None, float | None] = Field(
        default=(None, None), description="Smallest and largest value the metric can take (null: unbounded)."
    )


class MetricSpec(MetricTolerance):
    """What "better" means for one metric, and how much worse is tolerable, in the metric's own units.

    A metric has a `direction` (higher or lower is better) or a `target` (the ideal value,
    e.g. 0.5 for a stereotype-choice rate, where the distance |x - target| is what must not
    grow). `margin` is the non-inferiority margin in the metric's units (a likelihood
    difference near 17 needs a margin on that scale, not 0.02); `relative_margin` is a
    fraction of the champion's score (or of its distance to the target). `bounds` are the
    values the metric can take.

        >>> MetricSpec(target=0.5).loss(0.62), MetricSpec(direction="lower").loss(17.0)
        (0.12, 17.0)
    """

    direction: Direction = Field(
        default="higher",
        description="higher: larger is better; lower: smaller is better. Ignored where `target` is set.",
    )

    @property
    def kind(self) -> str:
        """`target` or the direction, for tables and findings."""
        return "target" if self.target is not None else self.direction

    def loss(self, value: float) -> float:
        """How bad `value` is on a scale where lower is always better: -x, x, or |x - target|."""
        if self.target is not None:
            return round(abs(value - self.target), 12)
        return value if self.direction == "lower" else -value

    def describe(self) -> str:
        """`higher is better`, `lower is better` or `target 0.5`."""
        return f"target {self.target:g}" if self.target is not None else f"{self.direction} is better"


class MetricResult(_Model):
    """One figure with its uncertainty, where it came from and whether it passed."""

    name: str
    value: float | None = Field(description="Point estimate; None where the data are insufficient.")
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0
    direction: Direction = Field(default="higher", description="Whether a higher or a lower value is better.")
    target: float | None = Field(
        default=None, description="The ideal value where the metric has one (then the distance to it is what matters)."
    )
    source: Source
    segment: dict[str, str] = Field(default_factory=dict)
    threshold: float | None = None
    passed: bool | None = Field(default=None, description="None means no verdict (e.g. insufficient data).")
    note: str = ""
    estimator: Literal["direct", "ppi"] = Field(
        default="direct",
        description="direct: from the observations alone; ppi: prediction-powered, a judge's verdicts on "
        "`n_judged` more events corrected by the `n` human labels (`driftloop.core.ppi`); its interval is normal.",
    )
    n_judged: int = Field(default=0, description="ppi: events with a judge's verdict but no human label.")

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        return _legacy_direction(data)

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

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
    detail: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-item extras: chosen answer, log-likelihoods."
    )
    task_hash: str = ""
    spec: MetricSpec = Field(
        default_factory=MetricSpec,
        description="Direction or target and margin of `metric` (from the task config, else lm-eval's higher_is_better).",
    )

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


FindingKind = Literal[
    "floor",
    "drop",
    "relative_drop",  # decide: breach tests on a window
    "gain",
    "non_inferiority",  # gate: paired tests on shared items
    "insufficient_data",
    "no_comparison",  # no verdict: too few items, nothing to compare with
    "no_margin",
    "no_target_suite",  # the gate cannot judge: a margin or a target suite is missing
    "drift",  # data drift: reported, never a trigger on its own
    "debounce",
    "cooldown",
    "budget",
    "answered",  # the loop's memory holds a trigger back
    "nothing_to_train",  # a regression the training data cannot answer
    "judge_trusted",
    "judge_untrusted",  # a judge's agreement with the humans: its estimates used, or shown only
]


class Finding(_Model):
    """One piece of typed evidence behind a decision: what was tested, on what, with which result.

    Decisions carry findings; their reasons are rendered from them (`driftloop.core.findings.render`)
    and never parsed back. `passed` False is a breach (decide) or a failed check (gate); None is
    no verdict.
    """

    kind: FindingKind
    metric: str = Field(default="", description="Metric name; for the gate `<suite>/<task>/<metric>`.")
    segment: dict[str, str] = Field(default_factory=dict)
    estimate: float | None = Field(
        default=None,
        description="Current value (decide) or challenger minus champion (gate; for target metrics the change in distance to the target, negative is better).",
    )
    ci_low: float | None = None
    ci_high: float | None = None
    reference: float | None = Field(
        default=None,
        description="The value compared against: reference window, champion's baseline, or the champion's score.",
    )
    challenger: float | None = Field(default=None, description="Gate: the challenger's score on the shared items.")
    threshold: float | None = Field(
        default=None,
        description="Floor, tolerated drop, required gain, or non-inferiority margin, in the metric's units.",
    )
    p_value: float | None = Field(default=None, description="Raw one-sided p-value.")
    p_adjusted: float | None = Field(default=None, description="Holm-adjusted p-value (decide), else equal to p_value.")
    alpha: float | None = None
    tests: int | None = Field(default=None, description="Size of the family the p-value was adjusted over.")
    n: int = 0
    n_reference: int | None = None
    unpaired: int = Field(default=0, description="Gate: items only one model has results on (ignored).")
    method: str = Field(default="", description="The test, e.g. 'exact McNemar', 'paired bootstrap', 'exact binomial'.")
    estimator: Literal["direct", "ppi"] = Field(
        default="direct",
        description="How `estimate` was made: from the observations alone, or prediction-powered (PPI++) from a "
        "trusted judge's verdicts on `n_judged` more events corrected by the `n` human labels.",
    )
    n_judged: int = Field(default=0, description="ppi: events with a judge's verdict but no human label.")
    reference_estimator: Literal["direct", "ppi"] | None = Field(
        default=None, description="How `reference` was made (drop tests); None where there is no reference."
    )
    reference_n_judged: int = Field(default=0, description="ppi reference: its events judged but not labelled.")
    direction: Direction = "higher"
    target: float | None = None
    role: str = Field(default="", description="Gate: the suite's role (target, canary, bias).")
    passed: bool | None = None
    detail: dict[str, Any] = Field(
        default_factory=dict,
        description="Kind-specific figures (debounce hits, hours since the last retrain, training counts...).",
    )

    @property
    def breached(self) -> bool:
        return self.passed is False


class Decision(_Model):
    """What the policy decided, on which findings, and why (reasons rendered from the findings)."""

    action: Action
    findings: list[Finding] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    evidence: list[MetricResult] = Field(default_factory=list)
    policy_version: str = ""

    def summary(self) -> str:
        return f"{self.action.value}: " + ("; ".join(self.reasons) if self.reasons else "no reason given")

    def of_kind(self, *kinds: str) -> list[Finding]:
        """The findings of these kinds, in order."""
        return [f for f in self.findings if f.kind in kinds]
