"""Input drift between a reference window and the current one: one evaluator, two backends.

`evaluate_drift` compares the columns of a `DriftSpec`. Small windows go to the Evidently
backend (`evaluators.drift_evidently`: DataDriftPreset on the frames); windows of more
than `exact_rows` rows together, or a reference that is already a `WindowProfile`, go to
the profile backend (`evaluators.drift_profiles`: Evidently's large-reference statistics
from exact per-column profiles of every row, the page drawn from a sample). Either way
this module assembles the result once: the skip rules, one typed `ColumnVerdict` per
column, one `drift_score` MetricResult per column (the statistic, its threshold and
verdict), one `drifted_share`, the notes, the summary and the page.

Columns that cannot be compared (missing, all null, too few values, a single value in
both windows) are reported with a note and no verdict rather than failing the cycle; an
empty window gives "insufficient data".

    >>> spec = DriftSpec(columns=["prompt_len", "latency_ms", "model_version"])
    >>> out = evaluate_drift(spec, reference, current)
    >>> [m.label() for m in out.metrics][:2]
    ['drift_score[column=prompt_len]', 'drift_score[column=latency_ms]']
    >>> [(v.column, v.score_kind, v.drifted) for v in out.verdicts][1]
    ('latency_ms', 'p_value', True)
    >>> out.summary["columns_drifted"]
    ['latency_ms']
    >>> Path("drift.html").write_text(out.html, encoding="utf-8")

`drift_report(reference, current, columns, drift_share, ...)` is the same call with the
spec's fields as arguments.
"""

from __future__ import annotations

import html as _html
from typing import Any, Protocol

import pandas as pd
from evidently import __version__ as EVIDENTLY_VERSION
from pydantic import BaseModel, Field

from driftloop.core.types import MetricResult
from evaluators.drift_evidently import prepare_frames
from evaluators.drift_profiles import prepare_profiles
from evaluators.drift_spec import ColumnStats, ColumnVerdict, Comparison, DriftSpec
from evaluators.profiles import WindowProfile

__all__ = ["ColumnVerdict", "DriftOutput", "DriftSpec", "drift_report", "evaluate_drift"]

NO_RESULT = "skipped: Evidently returned no drift result for this column"


class DriftOutput(BaseModel):
    """What one drift comparison produced.

    `metrics`: one `drift_score` per requested column, then `drifted_share`. `verdicts`:
    the typed verdict behind each `drift_score`. `html`: a standalone HTML page (Evidently's
    report, or a short notice where there was nothing to compare). `summary`:
    JSON-serialisable facts for logging and audit.
    """

    metrics: list[MetricResult]
    html: str
    summary: dict[str, Any] = Field(default_factory=dict)
    # Evidently's Snapshot behind `html` (None where Evidently did not run): saved to the workspace.
    snapshot: Any = None
    verdicts: list[ColumnVerdict] = Field(default_factory=list)

    def artifacts(self) -> dict[str, Any]:
        """What the report leaves besides its figures, by the names the evaluator registry uses."""
        return {"drift_report.html": self.html, "drift_summary": self.summary, "drift_snapshot": self.snapshot}


class Backend(Protocol):
    """Two windows as one backend holds them (`FramePair`, `ProfilePair`)."""

    stats: dict[str, ColumnStats]
    verdicts_from: str | None  # where the notes say the verdicts were computed; None: not said

    @property
    def n_reference(self) -> int: ...

    @property
    def n_current(self) -> int: ...

    def summary(self) -> dict[str, Any]: ...

    def compare(self, columns: list[str], drift_share: float) -> Comparison: ...


def drift_report(
    reference: pd.DataFrame | WindowProfile,
    current: pd.DataFrame,
    features: list[str],
    drift_share: float = 0.5,
    min_n: int = 30,
    exact_rows: int = 50_000,
    report_rows: int = 20_000,
) -> DriftOutput:
    """`evaluate_drift` with the spec's fields as arguments (see `DriftSpec`)."""
    spec = DriftSpec(
        columns=features, drift_share=drift_share, min_n=min_n, exact_rows=exact_rows, report_rows=report_rows
    )
    return evaluate_drift(spec, reference, current)


def evaluate_drift(spec: DriftSpec, reference: pd.DataFrame | WindowProfile, current: pd.DataFrame) -> DriftOutput:
    """Compare `spec.columns` of `current` against `reference`; never raises on data.

    A column is compared only when both windows hold at least `spec.min_n` non-null values,
    it has one kind in both and the two windows together hold at least two distinct
    values; otherwise its `drift_score` has value None, passed None and a note saying why.
    `drifted_share` is the share of compared columns that drifted, and passes while it is
    below `spec.drift_share`.
    """
    if isinstance(reference, WindowProfile) or spec.profiled(len(reference), len(current)):
        backend: Backend = prepare_profiles(reference, current, spec.columns, spec.report_rows)
    else:
        backend = prepare_frames(reference, current, spec.columns)
    return assemble(spec, backend)


def assemble(spec: DriftSpec, backend: Backend) -> DriftOutput:
    """Skip rules, tests, verdicts, metrics, notes, summary and page for one backend's windows."""
    n_ref, n_cur = backend.n_reference, backend.n_current
    summary: dict[str, Any] = {
        "evidently_version": EVIDENTLY_VERSION,
        "n_reference": n_ref,
        "n_current": n_cur,
        "drift_share_threshold": spec.drift_share,
        "columns_evaluated": [],
        "columns_drifted": [],
        "columns_skipped": {},
        "columns": {},
        "drifted_share": None,
        "dataset_drift": None,
        **backend.summary(),
    }
    if n_ref == 0 or n_cur == 0:
        side = (
            "both windows are empty"
            if n_ref == n_cur == 0
            else (f"the {'reference' if n_ref == 0 else 'current'} window is empty")
        )
        note = f"insufficient data (n=0): {side}"
        verdicts = [ColumnVerdict.of(backend.stats[c], skipped=note) for c in spec.columns]
        summary["columns_skipped"] = {c: note for c in spec.columns}
        metrics = [_column_metric(v, n_cur, None) for v in verdicts]
        metrics.append(_share_metric(None, n_cur, spec.drift_share, note))
        return DriftOutput(metrics=metrics, html=_notice_html(note, n_ref, n_cur), summary=summary, verdicts=verdicts)

    skipped = {c: why for c in spec.columns if (why := backend.stats[c].skip_reason(spec.min_n))}
    result = backend.compare([c for c in spec.columns if c not in skipped], spec.drift_share)
    if result.error:
        summary["error"] = result.error
    for col in spec.columns:
        if col not in skipped and col not in result.tests:  # no result: say so, never guess a verdict
            skipped[col] = result.failed.get(col, NO_RESULT)
    verdicts = [ColumnVerdict.of(backend.stats[c], result.tests.get(c), skipped.get(c)) for c in spec.columns]
    metrics = [_column_metric(v, n_cur, backend.verdicts_from) for v in verdicts]

    compared = [v.column for v in verdicts if v.skipped is None]
    drifted = [v.column for v in verdicts if v.drifted]
    share = len(drifted) / len(compared) if compared else None
    if compared:
        share_note = f"{len(drifted)} of {len(compared)} compared columns drifted"
        share_note += f" ({', '.join(drifted)})" if drifted else ""
        share_note += f"; {len(skipped)} skipped ({', '.join(skipped)})" if skipped else ""
    else:
        share_note = "insufficient data: no column could be compared"
    metrics.append(_share_metric(share, n_cur, spec.drift_share, share_note))

    html = result.html
    if not html:
        html = _notice_html(share_note, n_ref, n_cur, skipped)
    elif result.notice or skipped:
        html = _inject_notice(html, {**result.notice, **skipped})
    summary.update(
        columns_evaluated=compared,
        columns_drifted=drifted,
        columns_skipped=skipped,
        columns={v.column: v.summary_entry() for v in verdicts if v.skipped is None},
        drifted_share=share,
        dataset_drift=None if share is None else share >= spec.drift_share,
    )
    return DriftOutput(metrics=metrics, html=html, summary=summary, snapshot=result.snapshot, verdicts=verdicts)


def _column_metric(v: ColumnVerdict, n: int, verdicts_from: str | None) -> MetricResult:
    """The `drift_score` of one verdict; `n` is the current window's rows."""
    if v.skipped is not None:
        return MetricResult(
            name="drift_score", value=None, n=n, source="drift", segment={"column": v.column}, note=v.skipped
        )
    rule = "p-value below threshold" if v.score_is_p_value else "score >= threshold"
    state = "drift detected" if v.drifted else "no drift"
    note = f"{v.kind}; Evidently {v.method}, threshold {v.threshold:g}, drift when {rule}: {state}"
    if verdicts_from:
        note += f"; computed on {verdicts_from} (n_ref={v.n_reference}, n_cur={v.n_current})"
    if v.error_bound:
        note += f", binning error at most {v.error_bound:.2g}"
    return MetricResult(
        name="drift_score",
        value=v.score,
        n=n,
        # p-values shrink as drift grows; distances grow with it.
        direction="higher" if v.score_is_p_value else "lower",
        source="drift",
        segment={"column": v.column},
        threshold=v.threshold,
        passed=not v.drifted,
        note=note,
    )


def _share_metric(share: float | None, n: int, drift_share: float, note: str) -> MetricResult:
    return MetricResult(
        name="drifted_share",
        value=share,
        n=n,
        direction="lower",
        source="drift",
        threshold=drift_share,
        passed=None if share is None else share < drift_share,
        note=note,
    )


def _skipped_list(skipped: dict[str, str]) -> str:
    return "".join(f"<li><b>{_html.escape(c)}</b>: {_html.escape(r)}</li>" for c, r in skipped.items())


def _notice_html(message: str, n_ref: int, n_cur: int, skipped: dict[str, str] | None = None) -> str:
    """A small standalone page for the cases where Evidently has nothing to draw."""
    rows = _skipped_list(skipped or {})
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>driftloop drift report</title></head><body>"
        f"<h1>Drift report</h1><p>{_html.escape(message)}</p>"
        f"<p>reference rows: {n_ref}, current rows: {n_cur}</p>"
        + (f"<ul>{rows}</ul>" if rows else "")
        + "</body></html>"
    )


def _inject_notice(page: str, skipped: dict[str, str]) -> str:
    """Put the list of skipped columns at the top of Evidently's page, so the HTML alone is complete."""
    notice = f"<div class='driftloop-skipped'><p>Columns not compared:</p><ul>{_skipped_list(skipped)}</ul></div>"
    i = page.find("<body")
    j = page.find(">", i) if i >= 0 else -1
    return page[: j + 1] + notice + page[j + 1 :] if j >= 0 else notice + page
