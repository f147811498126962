"""How far to trust a judge, and what a trusted judge changes in a window's figures. Pure, no I/O.

A judge's verdicts are compared with the humans' on the events that have both
(`JudgeCalibration`: Cohen's kappa with a bootstrap interval, the confusion counts, kappa
per segment). `trust` turns that into a typed finding: the judge may feed the policy only
with at least `min_labels` such events and the lower bound of its kappa interval at or
above `min_kappa`; otherwise its figures are shown and not used, with the reason.
`JudgedWindow` carries a window's prediction-powered estimates (`driftloop.core.ppi`) and
the judges' findings to `decide`, where a used estimate replaces the human-only figure of
the same metric and segment (`apply`).

    >>> f = trust(cal, min_labels=100, min_kappa=0.4)
    >>> f.kind, f.detail["reason"]
    ('judge_untrusted', 'kappa 0.31 [0.22, 0.40] has its lower bound below 0.40')
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from driftloop.core.types import Finding, MetricResult


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Agreement(_Model):
    """Judge vs human on the events that have both: Cohen's kappa, its interval, the 2x2 counts."""

    n: int = Field(description="Events with a human label and a verdict.")
    kappa: float | None = Field(description="Cohen's kappa; None where it is undefined (one class only) or n = 0.")
    kappa_low: float | None = None
    kappa_high: float | None = None
    both_good: int = 0  # human good, judge good
    human_only_good: int = 0  # human good, judge bad
    judge_only_good: int = 0  # human bad, judge good
    both_bad: int = 0
    segment: dict[str, str] = Field(default_factory=dict)

    @property
    def accuracy(self) -> float | None:
        return (self.both_good + self.both_bad) / self.n if self.n else None


class JudgeCalibration(_Model):
    """A judge's agreement with the humans over one window, overall and per segment group."""

    judge: str
    label: str = Field(description="The human label compared against (thumbs_up or rating).")
    overall: Agreement
    segments: list[Agreement] = Field(default_factory=list)
    judged: int = Field(default=0, description="Events the judge gave a verdict on in the window.")
    calls: int = Field(default=0, description="Backend calls made (the rest came from the cache).")
    tokens: int = Field(default=0, description="Tokens the backend's model read for those calls (both verdicts).")
    seconds: float = Field(default=0.0, description="Wall time spent waiting for the backend.")
    over_budget: int = Field(default=0, description="Events left unjudged because of the call budget.")


def trust(cal: JudgeCalibration, min_labels: int, min_kappa: float) -> Finding:
    """`judge_trusted` where the judge may feed the policy, else `judge_untrusted` with the reason.

    Trusted: at least `min_labels` events with both a human label and a verdict, and the
    lower bound of kappa's interval at or above `min_kappa`.
    """
    a = cal.overall
    detail: dict[str, object] = {
        "judge": cal.judge,
        "label": cal.label,
        "min_labels": min_labels,
        "min_kappa": min_kappa,
        "accuracy": a.accuracy,
        "confusion": [[a.both_good, a.human_only_good], [a.judge_only_good, a.both_bad]],
    }
    reason = ""
    if a.n < min_labels:
        reason = f"{a.n} events with both a human label and a verdict, fewer than {min_labels}"
    elif a.kappa is None or a.kappa_low is None:
        reason = "kappa is undefined (the humans or the judge used one verdict only)"
    elif a.kappa_low < min_kappa:
        reason = f"kappa {a.kappa:.2f} [{a.kappa_low:.2f}, {a.kappa_high or 0:.2f}] has its lower bound below {min_kappa:.2f}"
    return Finding(
        kind="judge_untrusted" if reason else "judge_trusted",
        passed=None if reason else True,
        detail={**detail, "reason": reason} if reason else detail,
        metric=f"judge/{cal.judge}",
        estimate=a.kappa,
        ci_low=a.kappa_low,
        ci_high=a.kappa_high,
        threshold=min_kappa,
        n=a.n,
        method="Cohen's kappa, percentile bootstrap",
    )


class JudgedWindow(_Model):
    """What judges add to one window: prediction-powered estimates and the judges' findings.

    `estimates` are MetricResults with `estimator="ppi"`, by metric and segment, from the
    trusted judges only; `findings` say of every judge whether it was used and why.
    """

    estimates: list[MetricResult] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    shown: list[MetricResult] = Field(
        default_factory=list, description="Estimates of judges that are not trusted: reported, never decided on."
    )


def apply(current: list[MetricResult], judged: JudgedWindow | None) -> list[MetricResult]:
    """`current` with each figure that has a trusted judge's estimate (same name and segment) replaced by it.

    An estimate without a human-only counterpart is added: a segment no human rated
    enough still gets a figure when its labelled events reach the policy's `min_n`.
    """
    if judged is None or not judged.estimates:
        return current
    by_label = {m.label(): m for m in judged.estimates}
    out = [by_label.pop(m.label(), m) if m.source == "quality" else m for m in current]
    return out + list(by_label.values())
