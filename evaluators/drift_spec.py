"""What a drift comparison asks for and what it answers, as typed models shared by its backends.

`DriftSpec` says what to compare (the columns, the share of drifted columns that counts as
dataset drift, the row limits), built from `MonitorConfig` by `DriftSpec.from_monitor`.
A backend describes each column of both windows as `ColumnStats`, whose `skip_reason`
holds the rules for columns that cannot be compared, and answers each compared column
with a `DriftTest`. `evaluators.drift` turns stats and tests into one `ColumnVerdict` per
column. This module imports no backend, so both backends and the assembler can use it.

    >>> spec = DriftSpec.from_monitor(MonitorConfig(features=["latency_ms"], segment_fields=["topic"]))
    >>> spec.columns, spec.drift_share, spec.profiled(30_000, 30_000)
    (['latency_ms', 'topic'], 0.5, True)
    >>> ColumnStats(column="topic", kind_reference="categorical", kind_current="categorical",
    ...             n_reference=50, n_current=50, distinct=["a"]).skip_reason(min_n=30)
    "skipped: one distinct value ('a') in both windows, so drift is undefined"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from driftloop.core.config import MonitorConfig

Kind = Literal["numerical", "categorical"]
# "p_value": drift when the score is below the threshold; "distance": drift at or above it.
ScoreKind = Literal["p_value", "distance"]
Side = Literal["reference", "current"]


class DriftSpec(BaseModel):
    """What one drift comparison compares, and where it switches to exact profiles."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    columns: list[str] = Field(description="Columns to compare, in report order; repeats are dropped.")
    drift_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Share of compared columns whose drift "
        "counts as dataset drift (`MonitorConfig.drift_share_alert`).",
    )
    min_n: int = Field(default=30, ge=0, description="Non-null values each window needs for a column to be compared.")
    exact_rows: int = Field(
        default=50_000,
        ge=0,
        description="Above this many rows in the two windows together, "
        "verdicts come from exact column profiles (`MonitorConfig.exact_rows`).",
    )
    report_rows: int = Field(
        default=20_000,
        ge=1,
        description="Rows per window drawn into Evidently's page on the profile path (`MonitorConfig.report_rows`).",
    )

    @field_validator("columns")
    @classmethod
    def _unique(cls, columns: list[str]) -> list[str]:
        return list(dict.fromkeys(columns))

    @classmethod
    def from_monitor(cls, monitor: MonitorConfig, min_n: int = 30, confidence: float = 0.95) -> DriftSpec:
        """The monitor's drift: its features, then its segment fields. `confidence` is unused (no intervals)."""
        return cls(
            columns=[*monitor.features, *monitor.segment_fields],
            drift_share=monitor.drift_share_alert,
            min_n=min_n,
            exact_rows=monitor.exact_rows,
            report_rows=monitor.report_rows,
        )

    def profiled(self, reference_rows: int, current_rows: int) -> bool:
        """Whether windows of these sizes take the exact-profile backend."""
        return reference_rows + current_rows > self.exact_rows


def _where(sides: list[str]) -> str:
    return "both windows" if len(sides) == 2 else f"the {sides[0]} window"


class ColumnStats(BaseModel):
    """One column as a backend sees it in both windows: enough to decide whether it can be compared.

    Counts are of non-null values after cleaning (infinities count as missing).
    """

    column: str
    missing_from: list[Side] = Field(default_factory=list)
    kind_reference: Kind | None = None
    kind_current: Kind | None = None
    n_reference: int = 0
    n_current: int = 0
    distinct: list[Any] = Field(
        default_factory=list,
        description="At most two distinct non-null values of the two "
        "windows together: two tell that drift is defined, one is named in the note.",
    )

    def skip_reason(self, min_n: int) -> str:
        """Why this column cannot be compared, or '' when it can. The one place these rules live."""
        if self.missing_from:
            return f"skipped: column missing from {_where(self.missing_from)}"
        empty = [side for side, n in (("reference", self.n_reference), ("current", self.n_current)) if n == 0]
        if empty:
            return f"insufficient data (n=0): all values are null in {_where(empty)}"
        least = min(self.n_reference, self.n_current)
        if least < min_n:
            return (
                f"insufficient data (n={least}): non-null values reference={self.n_reference}, "
                f"current={self.n_current}, need {min_n} each"
            )
        if self.kind_reference != self.kind_current:
            return (
                f"skipped: column is {self.kind_reference} in the reference window "
                f"and {self.kind_current} in the current one"
            )
        if len(self.distinct) < 2:
            return f"skipped: one distinct value ({self.distinct[0]!r}) in both windows, so drift is undefined"
        return ""


class DriftTest(BaseModel):
    """One column's drift test as a backend ran it; the verdict is the test's own."""

    method: str = Field(description="The test as Evidently names it, e.g. 'K-S p_value' or 'wasserstein'.")
    score: float
    threshold: float
    score_kind: ScoreKind
    drifted: bool
    error_bound: float | None = Field(
        default=None,
        description="Bound on |score - score on the raw rows| where "
        "the score came from profiles; None where Evidently scored the rows.",
    )


class Comparison(BaseModel):
    """What a backend's `compare` returns for the columns that passed the skip rules."""

    tests: dict[str, DriftTest] = Field(default_factory=dict)
    failed: dict[str, str] = Field(default_factory=dict, description="Column -> why its test failed to run.")
    html: str = Field(default="", description="Evidently's page, or '' where it drew none.")
    snapshot: Any = None
    notice: dict[str, str] = Field(
        default_factory=dict, description="Lines for the top of the page, before the skipped columns."
    )
    error: str = Field(default="", description="Why Evidently failed, for the summary; '' when it did not.")


class ColumnVerdict(BaseModel):
    """The drift verdict on one column: a test's outcome, or why there is none (`skipped`)."""

    column: str
    kind: Kind | None = None
    method: str | None = None
    score: float | None = None
    threshold: float | None = None
    score_kind: ScoreKind | None = None
    drifted: bool | None = Field(default=None, description="None where the column was not compared.")
    n_reference: int = Field(default=0, description="Non-null reference values.")
    n_current: int = Field(default=0, description="Non-null current values.")
    error_bound: float | None = None
    skipped: str | None = Field(default=None, description="Why the column was not compared.")

    @classmethod
    def of(cls, stats: ColumnStats, test: DriftTest | None = None, skipped: str | None = None) -> ColumnVerdict:
        """The verdict from a column's stats and either its test or the reason it was skipped."""
        facts = {
            "column": stats.column,
            "kind": stats.kind_reference,
            "n_reference": stats.n_reference,
            "n_current": stats.n_current,
        }
        if test is None or skipped is not None:
            return cls(**facts, skipped=skipped or "skipped: no test result")
        return cls(**facts, **test.model_dump())

    @property
    def score_is_p_value(self) -> bool:
        return self.score_kind == "p_value"

    def summary_entry(self) -> dict[str, Any]:
        """The column's entry under the summary's `columns`: JSON for the drift_summary.json artifact."""
        entry = {
            "kind": self.kind,
            "score": self.score,
            "method": self.method,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "score_is_p_value": self.score_is_p_value,
        }
        if self.error_bound is not None:
            entry["error_bound"] = self.error_bound
        return entry
