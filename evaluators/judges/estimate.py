"""A judged window's figures: prediction-powered quality estimates and the judge's calibration.

`judge_window` takes a window frame (as the store builds it) and one judge's scores on its
events (a score in [0, 1], NaN where the judge gave none), and returns what a judge adds
to the window: its agreement with the humans (`JudgeCalibration`), the trust finding
(`driftloop.core.judging.trust`) and, overall and per segment group, the PPI++ estimate
(`driftloop.core.ppi.ppi_mean`) of the human metric the judge stands in for: the events
with a human label and a score are the labelled sample, those with a score only the
unlabelled one. A trusted judge's estimates go to `JudgedWindow.estimates`, which
`decide` uses in place of the human-only figures; an untrusted one's to `shown`.

    >>> out = judge_window(frame, scores, spec, ["topic"], min_n=30)
    >>> out.window.findings[0].kind, out.window.estimates[0].estimator
    ('judge_trusted', 'ppi')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from driftloop.core.config import JudgeSpec
from driftloop.core.judging import JudgeCalibration, JudgedWindow, trust
from driftloop.core.ppi import ppi_mean
from driftloop.core.types import MetricResult
from evaluators.judges.calibration import calibrate

# The human label a judge stands in for: (frame column, metric it estimates).
LABELS = {"thumbs_up": ("thumbs_up", "thumbs_up_rate"), "rating": ("rating", "mean_rating")}


@dataclass
class JudgeOutcome:
    calibration: JudgeCalibration
    window: JudgedWindow


def human_labels(frame: pd.DataFrame, label: str) -> pd.Series:
    """The human label as floats (thumbs 0/1, ratings in [0, 1]), NaN where the event has none."""
    column = LABELS[label][0]
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    raw = frame[column]
    return pd.to_numeric(raw.astype(object).where(raw.notna(), np.nan), errors="coerce").astype("float64")


def estimate(
    name: str, y: pd.Series, scores: pd.Series, segment: dict[str, str], judge: str, confidence: float
) -> MetricResult | None:
    """The PPI++ estimate of one metric on one group; None with fewer than 2 labelled events."""
    labelled = y.notna() & scores.notna()
    unlabelled = y.isna() & scores.notna()
    n = int(labelled.sum())
    if n < 2:
        return None
    est = ppi_mean(
        y[labelled].to_numpy(dtype=float),
        scores[labelled].to_numpy(dtype=float),
        scores[unlabelled].to_numpy(dtype=float),
        confidence=confidence,
    )
    return MetricResult(
        name=name,
        value=est.estimate,
        ci_low=est.ci_low,
        ci_high=est.ci_high,
        n=est.n,
        n_judged=est.n_unlabelled,
        estimator="ppi",
        direction="higher",
        source="quality",
        segment=segment,
        note=(
            f"PPI++ with judge {judge}: {est.n} human labels, {est.n_unlabelled} judged only, "
            f"lambda {est.lam:.2f}; human-only {est.classical:.3f} [{est.classical_low:.3f}, {est.classical_high:.3f}]"
        ),
    )


def judge_window(
    frame: pd.DataFrame,
    scores: pd.Series,
    spec: JudgeSpec,
    segment_fields: list[str],
    confidence: float = 0.95,
) -> JudgeOutcome:
    """Calibration, trust finding and PPI++ estimates of one judge on one window (see the module doc)."""
    y = human_labels(frame, spec.label)
    scores = scores.reindex(frame.index).astype("float64")
    cal = calibrate(spec.name, spec.label, y, scores, frame, segment_fields, confidence)
    finding = trust(cal, spec.min_labels, spec.min_kappa)
    metric = LABELS[spec.label][1]
    groups: list[tuple[dict[str, str], pd.Series]] = [({}, pd.Series(True, index=frame.index))]
    for field in segment_fields:
        if field in frame.columns:
            col = frame[field].astype("string")
            groups += [({field: str(v)}, col == v) for v in sorted(col.dropna().unique()) if v != ""]
    found = [estimate(metric, y[mask], scores[mask], seg, spec.name, confidence) for seg, mask in groups]
    results = [m for m in found if m is not None]
    if finding.kind == "judge_trusted":
        return JudgeOutcome(cal, JudgedWindow(estimates=results, findings=[finding]))
    return JudgeOutcome(cal, JudgedWindow(shown=results, findings=[finding]))


def combine(outcomes: list[JudgeOutcome]) -> JudgedWindow:
    """One window's judged figures from several judges, in config order: where two trusted judges
    estimate the same metric and segment, the first one's estimate is used and the other's shown
    (choosing the narrower interval after the fact would bias its coverage)."""
    used: dict[str, MetricResult] = {}
    shown: list[MetricResult] = []
    findings = []
    for o in outcomes:
        findings += o.window.findings
        shown += o.window.shown
        for m in o.window.estimates:
            if m.label() in used:
                shown.append(m)
            else:
                used[m.label()] = m
    return JudgedWindow(estimates=list(used.values()), findings=findings, shown=shown)
