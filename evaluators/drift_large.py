"""Drift on large windows: verdicts from exact full-data profiles, Evidently's page from a sample.

Evidently's DataDriftPreset on a million rows per window takes minutes; the statistics
it computes for a large reference (normed Wasserstein, Jensen-Shannon) depend only on
each column's value counts, which numpy builds in O(rows). So every verdict here is
computed over all rows (see `evaluators.profiles`), and Evidently runs only to draw the
page and the workspace snapshot, on a systematic sample of `report_rows` rows per window,
with each column's test pinned to the one the full data called for.

    >>> out = large_drift_report(reference_frame, current_frame, ["latency_ms", "topic"])
    >>> out.summary["verdicts_from"]
    'all rows'
    >>> ref = profile_window(reference_frame, ["latency_ms", "topic"])   # or a cached profile
    >>> large_drift_report(ref, current_frame, ["latency_ms", "topic"]).summary["columns_drifted"]
    ['latency_ms']
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from driftloop.types import MetricResult
from evaluators import drift as _d
from evaluators.profiles import (
    EVIDENTLY_LARGE_REFERENCE, ColumnProfile, WindowProfile, column_drift, profile_window,
)


def dkw_epsilon(n: int, alpha: float = 0.05) -> float:
    """Dvoretzky-Kiefer-Wolfowitz bound: with probability 1 - alpha, a sample of n rows has
    its empirical CDF within this distance of the full window's CDF, for every value."""
    return math.sqrt(math.log(2 / alpha) / (2 * n)) if n > 0 else 1.0


def large_drift_report(
    reference: pd.DataFrame | WindowProfile,
    current: pd.DataFrame,
    features: list[str],
    drift_share: float = 0.5,
    min_n: int = 30,
    report_rows: int = 20_000,
) -> _d.DriftOutput:
    """`evaluators.drift.drift_report` for large windows; same metrics, notes and summary keys.

    Each column's verdict is Evidently's large-reference test computed on all rows
    (`profiles.column_drift`); a column whose reference holds at most 1,000 values gets
    Evidently's own p-value test on its raw values. Evidently's HTML page and Snapshot are
    drawn from `report_rows` evenly spaced rows per window, with the tests pinned.
    """
    ref = reference if isinstance(reference, WindowProfile) else profile_window(reference, features, report_rows)
    cur = profile_window(current, features, report_rows)
    features = list(dict.fromkeys(features))
    n_ref, n_cur = ref.n_rows, cur.n_rows
    summary: dict[str, Any] = {
        "evidently_version": _d.EVIDENTLY_VERSION, "n_reference": n_ref, "n_current": n_cur,
        "drift_share_threshold": drift_share, "columns_evaluated": [], "columns_drifted": [],
        "columns_skipped": {}, "columns": {}, "drifted_share": None, "dataset_drift": None,
        "verdicts_from": "all rows",
        "report_sample_rows": {"reference": len(ref.sample), "current": len(cur.sample)},
    }
    if n_ref == 0 or n_cur == 0:
        side = "both windows are empty" if n_ref == n_cur == 0 else (
            f"the {'reference' if n_ref == 0 else 'current'} window is empty")
        note = f"insufficient data (n=0): {side}"
        metrics = [_d._no_verdict(c, n_cur, note) for c in features]
        metrics.append(_d._share_metric(None, n_cur, drift_share, note))
        summary["columns_skipped"] = {c: note for c in features}
        return _d.DriftOutput(metrics, _d._notice_html(note, n_ref, n_cur), summary)

    skipped: dict[str, str] = {}
    verdicts: dict[str, dict[str, Any]] = {}
    small: list[str] = []
    for col in features:
        reason = _skip_reason(col, ref, cur, min_n)
        if reason:
            skipped[col] = reason
        elif ref.columns[col].n <= EVIDENTLY_LARGE_REFERENCE:
            small.append(col)
        else:
            verdicts[col] = column_drift(ref.columns[col], cur.columns[col])
    if small:
        _small_reference_verdicts(small, ref, current, drift_share, verdicts, skipped)
    compared = [c for c in features if c in verdicts]
    kinds = {c: ref.columns[c].kind for c in compared}

    metrics: list[MetricResult] = []
    for col in features:
        if col in skipped:
            metrics.append(_d._no_verdict(col, n_cur, skipped[col]))
            continue
        v = verdicts[col]
        note = _d._method_note(kinds[col], v) + f"; computed on all rows (n_ref={ref.columns[col].n}, n_cur={cur.columns[col].n})"
        if v.get("error_bound"):
            note += f", binning error at most {v['error_bound']:.2g}"
        metrics.append(MetricResult(
            name="drift_score", value=v["score"], n=n_cur, higher_is_better=v["score_is_p_value"], source="drift",
            segment={"column": col}, threshold=v["threshold"], passed=not v["drifted"], note=note))
    drifted = [c for c in compared if verdicts[c]["drifted"]]
    share = len(drifted) / len(compared) if compared else None
    if compared:
        share_note = f"{len(drifted)} of {len(compared)} compared columns drifted"
        share_note += f" ({', '.join(drifted)})" if drifted else ""
        share_note += f"; {len(skipped)} skipped ({', '.join(skipped)})" if skipped else ""
    else:
        share_note = "insufficient data: no column could be compared"
    metrics.append(_d._share_metric(share, n_cur, drift_share, share_note))

    html, snapshot = _sample_page(ref, cur, compared, verdicts, drift_share, summary)
    if not html:
        html = _d._notice_html(share_note, n_ref, n_cur, skipped)
    else:
        eps = dkw_epsilon(min(len(ref.sample), len(cur.sample)))
        notice = {"verdicts": f"computed on all rows ({n_ref} reference, {n_cur} current); the charts below are "
                              f"drawn from a systematic sample of {len(ref.sample)} reference and {len(cur.sample)} "
                              f"current rows (sample CDFs within {eps:.3f} of the full ones at 95%, DKW), so the "
                              "scores printed on this page are the sample's"}
        html = _d._inject_notice(html, {**notice, **skipped})
    summary.update(
        columns_evaluated=compared, columns_drifted=drifted, columns_skipped=skipped,
        columns={c: {"kind": kinds[c], **verdicts[c]} for c in compared},
        drifted_share=share, dataset_drift=None if share is None else share >= drift_share,
    )
    return _d.DriftOutput(metrics, html, summary, snapshot)


def _skip_reason(col: str, ref: WindowProfile, cur: WindowProfile, min_n: int) -> str:
    """Same rules and wording as `drift._prepare`, on profiles."""
    missing = [s for s, p in (("reference", ref), ("current", cur)) if col not in p.columns]
    if missing:
        where = "both windows" if len(missing) == 2 else f"the {missing[0]} window"
        return f"skipped: column missing from {where}"
    r, c = ref.columns[col], cur.columns[col]
    if r.n == 0 or c.n == 0:
        sides = [s for s, k in (("reference", r.n), ("current", c.n)) if k == 0]
        where = "both windows" if len(sides) == 2 else f"the {sides[0]} window"
        return f"insufficient data (n=0): all values are null in {where}"
    if min(r.n, c.n) < min_n:
        return f"insufficient data (n={min(r.n, c.n)}): non-null values reference={r.n}, current={c.n}, need {min_n} each"
    if r.kind != c.kind:
        return f"skipped: column is {r.kind} in the reference window and {c.kind} in the current one"
    union = _union(r, c)
    if len(union) < 2:
        only = union[0]
        return f"skipped: one distinct value ({only!r}) in both windows, so drift is undefined"
    return ""


def _union(r: ColumnProfile, c: ColumnProfile) -> list[Any]:
    if r.resolution > 0 or c.resolution > 0:
        return [0, 1]  # binned means thousands of distinct values
    vals = set(r.support.tolist()) | set(c.support.tolist())
    return sorted(vals, key=str)[:2]


def _small_reference_verdicts(cols: list[str], ref: WindowProfile, current: pd.DataFrame, drift_share: float,
                              verdicts: dict[str, dict[str, Any]], skipped: dict[str, str]) -> None:
    """Evidently's own p-value tests for columns whose reference has at most 1,000 values (cheap)."""
    numerical = [c for c in cols if ref.columns[c].kind == "numerical"]
    ref_frame = pd.DataFrame({c: pd.Series(ref.columns[c].raw) for c in cols})
    cur_frame = pd.DataFrame({c: _clean(current[c], ref.columns[c].kind) for c in cols})
    try:
        found, _, _ = _d._run_evidently(ref_frame, cur_frame, numerical, [c for c in cols if c not in numerical],
                                        drift_share)
    except Exception as e:  # noqa: BLE001 - one failed test must not stop the others
        found, failure = {}, f"{type(e).__name__}: {e}".splitlines()[0][:300]
        for c in cols:
            skipped[c] = f"skipped: Evidently failed ({failure})"
        return
    for c in cols:
        if c in found:
            verdicts[c] = {**found[c], "error_bound": 0.0}
        else:
            skipped[c] = "skipped: Evidently returned no drift result for this column"


def _clean(s: pd.Series, kind: str) -> pd.Series:
    if kind == "numerical":
        v = pd.to_numeric(s, errors="coerce").astype("float64").replace([np.inf, -np.inf], np.nan)
        return v.reset_index(drop=True)
    return _d._as_category(s).reset_index(drop=True)


def _sample_page(ref: WindowProfile, cur: WindowProfile, compared: list[str], verdicts: dict[str, dict[str, Any]],
                 drift_share: float, summary: dict[str, Any]) -> tuple[str, Any]:
    """Evidently's page and Snapshot over the row samples, each column's test pinned to the full-data one."""
    ref_cols: dict[str, pd.Series] = {}
    cur_cols: dict[str, pd.Series] = {}
    kinds: dict[str, str] = {}
    cols = [c for c in compared if c in ref.sample.columns and c in cur.sample.columns
            and not _d._prepare(c, ref.sample, cur.sample, 1, ref_cols, cur_cols, kinds)]
    # The sample may see a numeric column as categorical (or vice versa) only if types differ; keep the profile's kind.
    cols = [c for c in cols if kinds[c] == ref.columns[c].kind]
    if not cols:
        return "", None
    num = [c for c in cols if kinds[c] == "numerical"]
    try:
        _, html, snapshot = _d._run_evidently(
            pd.DataFrame({c: ref_cols[c] for c in cols}), pd.DataFrame({c: cur_cols[c] for c in cols}),
            num, [c for c in cols if c not in num], drift_share,
            methods={c: _evidently_method(verdicts[c]["method"]) for c in cols})
    except Exception as e:  # noqa: BLE001 - the verdicts stand without the page
        summary["error"] = f"report page: {type(e).__name__}: {e}".splitlines()[0][:300]
        return "", None
    return html, snapshot


def _evidently_method(method: str) -> str:
    """Evidently's registry name for a method as it appears in results ("Wasserstein distance (normed)")."""
    low = method.lower()
    for name, key in (("wasserstein", "wasserstein"), ("jensen", "jensenshannon"), ("k-s", "ks"), ("ks", "ks"),
                      ("chi", "chisquare"), ("z-test", "z"), ("z test", "z")):
        if key in low or name in low:
            return key
    return low
