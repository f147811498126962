"""Input drift between a reference window and the current one, computed by Evidently.

Each requested column gets one `drift_score` MetricResult (the statistic Evidently's
DataDriftPreset picked for it, with its threshold and verdict), and the report as a
whole gets one `drifted_share`. Columns that cannot be compared (missing, all null,
too few values, a single value in both windows) are reported with a note and no
verdict rather than failing the cycle; an empty window gives "insufficient data".

    >>> out = drift_report(reference, current, ["prompt_len", "latency_ms", "model_version"])
    >>> [m.label() for m in out.metrics][:2]
    ['drift_score[column=prompt_len]', 'drift_score[column=latency_ms]']
    >>> out.summary["columns_drifted"]
    ['latency_ms']
    >>> Path("drift.html").write_text(out.html, encoding="utf-8")

Evidently chooses the test from the reference size (see
`evidently.legacy.calculations.stattests.registry._get_default_stattest`): up to 1,000
reference rows a p-value test (K-S for numbers, chi-square or Z for categories, drift when
p-value below 0.05); above that a distance (normed Wasserstein for numbers, Jensen-Shannon for
categories, drift when the distance >= 0.1).

Windows of more than `exact_rows` rows together go to `evaluators.drift_large`, which computes
those same large-reference statistics from exact per-column profiles of every row and runs
Evidently only to draw the page, on a sample; the metrics and summary keep this shape.
"""

from __future__ import annotations

import html as _html
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently import __version__ as EVIDENTLY_VERSION
from evidently.presets import DataDriftPreset

from driftloop.types import MetricResult

# Stored as strings in the store, but a caller may hand us ints: a version is a label, not a quantity.
ALWAYS_CATEGORICAL = frozenset({"model_version"})


@dataclass
class DriftOutput:
    """What one drift comparison produced.

    `metrics`: one `drift_score` per requested column, then `drifted_share`.
    `html`: a standalone HTML page (Evidently's report, or a short notice where there was
    nothing to compare). `summary`: JSON-serialisable facts for logging and audit.
    """

    metrics: list[MetricResult]
    html: str
    summary: dict[str, Any] = field(default_factory=dict)
    # Evidently's Snapshot behind `html` (None where Evidently did not run): saved to the workspace.
    snapshot: Any = None


def drift_report(
    reference: "pd.DataFrame | WindowProfile",
    current: pd.DataFrame,
    features: list[str],
    drift_share: float = 0.5,
    min_n: int = 30,
    exact_rows: int = 50_000,
    report_rows: int = 20_000,
) -> DriftOutput:
    """Compare `features` of `current` against `reference` with Evidently's DataDriftPreset.

    Numeric (non-bool) columns are declared numerical and every other column, including
    `model_version` and the segment fields, categorical; infinities count as missing.
    A column is compared only when both windows hold at least `min_n` non-null values
    and the two windows together hold at least two distinct values; otherwise its
    `drift_score` has value None, passed None and a note saying why. `drifted_share` is
    the share of compared columns that drifted, and passes while it is below
    `drift_share`. Never raises on data: empty windows give "insufficient data (n=0)".

    Large windows (more than `exact_rows` rows in the two together, or a `reference`
    that is already a `WindowProfile`) take the profile path of `evaluators.drift_large`:
    verdicts from every row's exact summaries, Evidently's page drawn from a systematic
    sample of `report_rows` rows per window.
    """
    from evaluators.profiles import WindowProfile

    if isinstance(reference, WindowProfile) or len(reference) + len(current) > exact_rows:
        from evaluators.drift_large import large_drift_report

        return large_drift_report(reference, current, features, drift_share, min_n, report_rows)
    n_ref, n_cur = len(reference), len(current)
    summary: dict[str, Any] = {
        "evidently_version": EVIDENTLY_VERSION,
        "n_reference": n_ref,
        "n_current": n_cur,
        "drift_share_threshold": drift_share,
        "columns_evaluated": [],
        "columns_drifted": [],
        "columns_skipped": {},
        "columns": {},
        "drifted_share": None,
        "dataset_drift": None,
    }
    features = list(dict.fromkeys(features))  # keep order, drop repeats

    if n_ref == 0 or n_cur == 0:
        note = f"insufficient data (n=0): the {'reference' if n_ref == 0 else 'current'} window is empty"
        if n_ref == 0 and n_cur == 0:
            note = "insufficient data (n=0): both windows are empty"
        metrics = [_no_verdict(c, n_cur, note) for c in features]
        metrics.append(_share_metric(None, n_cur, drift_share, note))
        summary["columns_skipped"] = {c: note for c in features}
        return DriftOutput(metrics, _notice_html(note, n_ref, n_cur), summary)

    ref_cols: dict[str, pd.Series] = {}
    cur_cols: dict[str, pd.Series] = {}
    kinds: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for col in features:
        reason = _prepare(col, reference, current, min_n, ref_cols, cur_cols, kinds)
        if reason:
            skipped[col] = reason
    compared = [c for c in features if c not in skipped]

    verdicts: dict[str, dict[str, Any]] = {}
    html = ""
    failure = ""
    snapshot = None
    if compared:
        try:
            verdicts, html, snapshot = _run_evidently(
                pd.DataFrame({c: ref_cols[c] for c in compared}),
                pd.DataFrame({c: cur_cols[c] for c in compared}),
                [c for c in compared if kinds[c] == "numerical"],
                [c for c in compared if kinds[c] == "categorical"],
                drift_share,
            )
        except Exception as e:  # noqa: BLE001 - one bad report must not stop the cycle's quality and bias checks
            failure = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            summary["error"] = failure
    for col in compared:
        if col not in verdicts:  # no result from Evidently: say so, never guess a verdict
            skipped[col] = (
                f"skipped: Evidently failed ({failure})" if failure
                else "skipped: Evidently returned no drift result for this column"
            )
    compared = [c for c in compared if c not in skipped]

    metrics: list[MetricResult] = []
    for col in features:
        if col in skipped:
            metrics.append(_no_verdict(col, n_cur, skipped[col]))
            continue
        v = verdicts[col]
        metrics.append(
            MetricResult(
                name="drift_score",
                value=v["score"],
                n=n_cur,
                # p-values shrink as drift grows; distances grow with it.
                higher_is_better=v["score_is_p_value"],
                source="drift",
                segment={"column": col},
                threshold=v["threshold"],
                passed=not v["drifted"],
                note=_method_note(kinds[col], v),
            )
        )

    drifted = [c for c in compared if verdicts[c]["drifted"]]
    share = len(drifted) / len(compared) if compared else None
    if compared:
        share_note = f"{len(drifted)} of {len(compared)} compared columns drifted"
        if drifted:
            share_note += f" ({', '.join(drifted)})"
        if skipped:
            share_note += f"; {len(skipped)} skipped ({', '.join(skipped)})"
    else:
        share_note = "insufficient data: no column could be compared"
    metrics.append(_share_metric(share, n_cur, drift_share, share_note))

    if not html:
        html = _notice_html(share_note, n_ref, n_cur, skipped)
    elif skipped:
        html = _inject_notice(html, skipped)

    summary.update(
        columns_evaluated=compared,
        columns_drifted=drifted,
        columns_skipped=skipped,
        columns={c: {"kind": kinds[c], **verdicts[c]} for c in compared},
        drifted_share=share,
        dataset_drift=None if share is None else share >= drift_share,
    )
    return DriftOutput(metrics, html, summary, snapshot)


def _prepare(
    col: str,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    min_n: int,
    ref_cols: dict[str, pd.Series],
    cur_cols: dict[str, pd.Series],
    kinds: dict[str, str],
) -> str:
    """Clean one column of both windows; return why it cannot be compared, or ''."""
    missing = [side for side, f in (("reference", reference), ("current", current)) if col not in f.columns]
    if missing:
        where = "both windows" if len(missing) == 2 else f"the {missing[0]} window"
        return f"skipped: column missing from {where}"
    r, c = reference[col], current[col]
    numeric = (
        col not in ALWAYS_CATEGORICAL
        and pd.api.types.is_numeric_dtype(r.dtype)
        and pd.api.types.is_numeric_dtype(c.dtype)
        and not pd.api.types.is_bool_dtype(r.dtype)
        and not pd.api.types.is_bool_dtype(c.dtype)
    )
    if numeric:
        # Nullable Int64 and friends become float64; +-inf breaks Evidently's binning, so it counts as missing.
        r = pd.to_numeric(r, errors="coerce").astype("float64").replace([np.inf, -np.inf], np.nan)
        c = pd.to_numeric(c, errors="coerce").astype("float64").replace([np.inf, -np.inf], np.nan)
    else:
        r, c = _as_category(r), _as_category(c)
    r_n, c_n = int(r.notna().sum()), int(c.notna().sum())
    if r_n == 0 or c_n == 0:
        sides = [s for s, k in (("reference", r_n), ("current", c_n)) if k == 0]
        where = "both windows" if len(sides) == 2 else f"the {sides[0]} window"
        return f"insufficient data (n=0): all values are null in {where}"
    if min(r_n, c_n) < min_n:
        return (
            f"insufficient data (n={min(r_n, c_n)}): non-null values "
            f"reference={r_n}, current={c_n}, need {min_n} each"
        )
    distinct = pd.concat([r.dropna(), c.dropna()], ignore_index=True).unique()
    if len(distinct) < 2:
        only = distinct[0].item() if hasattr(distinct[0], "item") else distinct[0]
        return f"skipped: one distinct value ({only!r}) in both windows, so drift is undefined"
    ref_cols[col], cur_cols[col] = r.reset_index(drop=True), c.reset_index(drop=True)
    kinds[col] = "numerical" if numeric else "categorical"
    return ""


def _as_category(s: pd.Series) -> pd.Series:
    """Strings as plain objects, missing as None: Evidently counts categories by value."""
    return s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v))


def _run_evidently(
    ref: pd.DataFrame, cur: pd.DataFrame, numerical: list[str], categorical: list[str], drift_share: float,
    methods: dict[str, str] | None = None,
) -> tuple[dict[str, dict[str, Any]], str, Any]:
    """Run DataDriftPreset; return per-column {score, method, threshold, drifted, score_is_p_value}, the HTML
    and the Snapshot. `methods` pins a column's test by Evidently name (e.g. "wasserstein")."""
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    report = Report([DataDriftPreset(columns=numerical + categorical, drift_share=drift_share,
                                     per_column_method=methods or None)], include_tests=True)
    with warnings.catch_warnings():
        # Evidently's binning divides by zero on narrow columns and warns; the results are still defined.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )
        result = snapshot.dict()
        html = snapshot.get_html_str(as_iframe=False)

    verdicts: dict[str, dict[str, Any]] = {}
    for m in result["metrics"]:
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith(":ValueDrift") and isinstance(m.get("value"), (int, float)):
            method = str(cfg.get("method") or "")
            verdicts[cfg["column"]] = {
                "score": float(m["value"]),
                "method": method,
                "threshold": None if cfg.get("threshold") is None else float(cfg["threshold"]),
                "drifted": None,
                "score_is_p_value": "p_value" in method,
            }
    # The verdict is Evidently's own test status, so we never re-derive its per-test direction.
    for t in result["tests"]:
        params = t.get("metric_config", {}).get("params", {})
        col = params.get("column")
        if t.get("id") == "drift" and col in verdicts:
            verdicts[col]["drifted"] = str(t.get("status", "")).upper().endswith("FAIL")
    return {c: v for c, v in verdicts.items() if v["drifted"] is not None}, html, snapshot


def _method_note(kind: str, v: dict[str, Any]) -> str:
    rule = "p-value below threshold" if v["score_is_p_value"] else "score >= threshold"
    state = "drift detected" if v["drifted"] else "no drift"
    return f"{kind}; Evidently {v['method']}, threshold {v['threshold']:g}, drift when {rule}: {state}"


def _no_verdict(col: str, n: int, note: str) -> MetricResult:
    return MetricResult(name="drift_score", value=None, n=n, source="drift", segment={"column": col}, note=note)


def _share_metric(share: float | None, n: int, drift_share: float, note: str) -> MetricResult:
    return MetricResult(
        name="drifted_share",
        value=share,
        n=n,
        higher_is_better=False,
        source="drift",
        threshold=drift_share,
        passed=None if share is None else share < drift_share,
        note=note,
    )


def _notice_html(message: str, n_ref: int, n_cur: int, skipped: dict[str, str] | None = None) -> str:
    """A small standalone page for the cases where Evidently has nothing to draw."""
    rows = "".join(
        f"<li><b>{_html.escape(c)}</b>: {_html.escape(r)}</li>" for c, r in (skipped or {}).items()
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>driftloop drift report</title></head><body>"
        f"<h1>Drift report</h1><p>{_html.escape(message)}</p>"
        f"<p>reference rows: {n_ref}, current rows: {n_cur}</p>"
        + (f"<ul>{rows}</ul>" if rows else "")
        + "</body></html>"
    )


def _inject_notice(page: str, skipped: dict[str, str]) -> str:
    """Put the list of skipped columns at the top of Evidently's page, so the HTML alone is complete."""
    rows = "".join(f"<li><b>{_html.escape(c)}</b>: {_html.escape(r)}</li>" for c, r in skipped.items())
    notice = f"<div class='driftloop-skipped'><p>Columns not compared:</p><ul>{rows}</ul></div>"
    i = page.find("<body")
    j = page.find(">", i) if i >= 0 else -1
    return page[: j + 1] + notice + page[j + 1 :] if j >= 0 else notice + page
