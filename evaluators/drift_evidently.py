"""Evidently backend of the drift evaluator: cleaned frames in, Evidently's own tests out.

`prepare_frames` cleans each requested column of two frames the way Evidently should see
it (numeric non-bool columns as float64 with infinities as missing, every other column,
and `model_version`, as text categories) and describes it as `ColumnStats`. Its
`compare` runs DataDriftPreset on the columns the skip rules kept and returns each
column's `DriftTest`, the HTML page and the Snapshot. `evidently_report` is the one
Evidently call, which the profile backend (`evaluators.drift_profiles`) reuses.

    >>> frames = prepare_frames(reference, current, ["latency_ms", "topic"])
    >>> frames.stats["topic"].kind_reference, frames.stats["topic"].n_current
    ('categorical', 300)
    >>> got = frames.compare(["latency_ms", "topic"], drift_share=0.5)
    >>> got.tests["latency_ms"].method, got.tests["latency_ms"].drifted
    ('K-S p_value', True)

Evidently chooses the test from the reference size (see
`evidently.legacy.calculations.stattests.registry._get_default_stattest`): up to 1,000
reference rows a p-value test (K-S for numbers, chi-square or Z for categories, drift when
the p-value is below 0.05); above that a distance (normed Wasserstein for numbers,
Jensen-Shannon for categories, drift when the distance >= 0.1).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

from evaluators.drift_spec import ColumnStats, Comparison, DriftTest, Kind
from evaluators.profiles import is_numerical


def as_category(s: pd.Series) -> pd.Series:
    """Strings as plain objects, missing as None: Evidently counts categories by value."""
    return s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v))


def clean(s: pd.Series, kind: Kind) -> pd.Series:
    """A column as Evidently gets it: float64 with +-inf as missing (it breaks the binning), or text categories."""
    if kind == "numerical":
        # Nullable Int64 and friends become float64.
        s = pd.to_numeric(s, errors="coerce").astype("float64").replace([np.inf, -np.inf], np.nan)
    else:
        s = as_category(s)
    return s.reset_index(drop=True)


@dataclass(frozen=True)
class FramePair:
    """Two windows' cleaned columns and their stats; `compare` runs Evidently on them."""

    n_reference: int
    n_current: int
    stats: dict[str, ColumnStats]
    reference: dict[str, pd.Series]
    current: dict[str, pd.Series]
    # Evidently scores the frames it is given: no "computed on all rows" to add to the notes.
    verdicts_from: str | None = None

    def summary(self) -> dict[str, Any]:
        return {}

    def compare(self, columns: list[str], drift_share: float) -> Comparison:
        """Evidently's tests, page and Snapshot for `columns` (each must have passed the skip rules)."""
        if not columns:
            return Comparison()
        kinds = {c: self.stats[c].kind_reference for c in columns}
        return evidently_report(
            pd.DataFrame({c: self.reference[c] for c in columns}),
            pd.DataFrame({c: self.current[c] for c in columns}),
            kinds,
            drift_share,
        )


def prepare_frames(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> FramePair:
    """Clean `columns` of both frames and describe each; columns absent from a frame are only described."""
    stats: dict[str, ColumnStats] = {}
    ref_cols: dict[str, pd.Series] = {}
    cur_cols: dict[str, pd.Series] = {}
    for col in columns:
        missing = [side for side, f in (("reference", reference), ("current", current)) if col not in f.columns]
        if missing:
            stats[col] = ColumnStats(column=col, missing_from=missing)
            continue
        # One kind for both windows: a column numeric in one and not the other is compared as categories.
        kind: Kind = (
            "numerical" if is_numerical(col, reference[col]) and is_numerical(col, current[col]) else "categorical"
        )
        r, c = clean(reference[col], kind), clean(current[col], kind)
        distinct = pd.concat([r.dropna(), c.dropna()], ignore_index=True).unique()[:2]
        stats[col] = ColumnStats(
            column=col,
            kind_reference=kind,
            kind_current=kind,
            n_reference=int(r.notna().sum()),
            n_current=int(c.notna().sum()),
            distinct=[v.item() if hasattr(v, "item") else v for v in distinct],
        )
        ref_cols[col], cur_cols[col] = r, c
    return FramePair(len(reference), len(current), stats, ref_cols, cur_cols)


def evidently_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    kinds: dict[str, Kind | None],
    drift_share: float,
    methods: dict[str, str] | None = None,
) -> Comparison:
    """Run DataDriftPreset on cleaned frames; never raises. `methods` pins a column's test by Evidently's
    name (e.g. "wasserstein"). Where Evidently fails, every column is `failed` with the reason."""
    numerical = [c for c, k in kinds.items() if k == "numerical"]
    categorical = [c for c in kinds if c not in numerical]
    try:
        tests, html, snapshot = _run(reference, current, numerical, categorical, drift_share, methods)
    except Exception as e:  # one failed report must not stop the cycle's quality and bias checks
        failure = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        return Comparison(failed={c: f"skipped: Evidently failed ({failure})" for c in kinds}, error=failure)
    return Comparison(tests=tests, html=html, snapshot=snapshot)


def _run(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    drift_share: float,
    methods: dict[str, str] | None,
) -> tuple[dict[str, DriftTest], str, Any]:
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    report = Report(
        [DataDriftPreset(columns=numerical + categorical, drift_share=drift_share, per_column_method=methods or None)],
        include_tests=True,
    )
    with warnings.catch_warnings():
        # Evidently's binning divides by zero on narrow columns and warns; the results are still defined.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )
        result = snapshot.dict()
        html = snapshot.get_html_str(as_iframe=False)

    scores: dict[str, dict[str, Any]] = {}
    for m in result["metrics"]:
        cfg = m.get("config", {})
        if (
            cfg.get("type", "").endswith(":ValueDrift")
            and isinstance(m.get("value"), (int, float))
            and cfg.get("threshold") is not None
        ):
            method = str(cfg.get("method") or "")
            scores[cfg["column"]] = {
                "method": method,
                "score": float(m["value"]),
                "threshold": float(cfg["threshold"]),
                "score_kind": "p_value" if "p_value" in method else "distance",
            }
    # The verdict is Evidently's own test status, so we never re-derive its per-test direction.
    tests: dict[str, DriftTest] = {}
    for t in result["tests"]:
        col = t.get("metric_config", {}).get("params", {}).get("column")
        if t.get("id") == "drift" and col in scores:
            tests[col] = DriftTest(**scores[col], drifted=str(t.get("status", "")).upper().endswith("FAIL"))
    return tests, html, snapshot


def stattest_key(method: str) -> str:
    """Evidently's registry name for a method as it appears in results ("Wasserstein distance (normed)")."""
    low = method.lower()
    for name, key in (
        ("wasserstein", "wasserstein"),
        ("jensen", "jensenshannon"),
        ("k-s", "ks"),
        ("ks", "ks"),
        ("chi", "chisquare"),
        ("z-test", "z"),
        ("z test", "z"),
    ):
        if key in low or name in low:
            return key
    return low
