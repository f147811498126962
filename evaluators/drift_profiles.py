"""Profile backend of the drift evaluator: verdicts from exact full-data profiles, the page from a sample.

Evidently's DataDriftPreset on a million rows per window takes minutes; the statistics
it computes for a large reference (normed Wasserstein, Jensen-Shannon) depend only on
each column's value counts, which numpy builds in O(rows). So every test here is
computed over all rows (see `evaluators.profiles`); a column whose reference holds at
most 1,000 values gets Evidently's own p-value test on its raw values, which the profile
keeps. Evidently runs only to draw the page and the workspace snapshot, on a systematic
sample of `report_rows` rows per window, with each column's test pinned to the one the
full data called for.

    >>> pair = prepare_profiles(reference_frame, current_frame, ["latency_ms", "topic"], report_rows=20_000)
    >>> pair.summary()["verdicts_from"], pair.stats["latency_ms"].n_reference
    ('all rows', 1000000)
    >>> ref = profile_window(reference_frame, ["latency_ms", "topic"])   # or a cached profile
    >>> prepare_profiles(ref, current_frame, ["latency_ms", "topic"], 20_000).compare(["latency_ms"], 0.5).tests
    {'latency_ms': DriftTest(method='wasserstein', score=0.83, threshold=0.1, score_kind='distance', drifted=True, ...)}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from evaluators.drift_evidently import clean, evidently_report, prepare_frames, stattest_key
from evaluators.drift_spec import ColumnStats, Comparison, DriftTest
from evaluators.profiles import EVIDENTLY_LARGE_REFERENCE, ColumnProfile, WindowProfile, column_drift, profile_window


def dkw_epsilon(n: int, alpha: float = 0.05) -> float:
    """Dvoretzky-Kiefer-Wolfowitz bound: with probability 1 - alpha, a sample of n rows has
    its empirical CDF within this distance of the full window's CDF, for every value."""
    return math.sqrt(math.log(2 / alpha) / (2 * n)) if n > 0 else 1.0


@dataclass(frozen=True)
class ProfilePair:
    """Profiles of both windows (and the current frame, for small-reference tests); `compare` tests them."""

    reference: WindowProfile
    current: WindowProfile
    current_frame: pd.DataFrame
    stats: dict[str, ColumnStats]
    verdicts_from: str | None = "all rows"

    @property
    def n_reference(self) -> int:
        return self.reference.n_rows

    @property
    def n_current(self) -> int:
        return self.current.n_rows

    def summary(self) -> dict[str, Any]:
        return {
            "verdicts_from": self.verdicts_from,
            "report_sample_rows": {"reference": len(self.reference.sample), "current": len(self.current.sample)},
        }

    def compare(self, columns: list[str], drift_share: float) -> Comparison:
        """Each column's test on all rows, then Evidently's page over the samples (`columns` passed the skip rules)."""
        tests: dict[str, DriftTest] = {}
        small = [c for c in columns if self.reference.columns[c].n <= EVIDENTLY_LARGE_REFERENCE]
        for col in columns:
            if col not in small:
                tests[col] = column_drift(self.reference.columns[col], self.current.columns[col])
        failed: dict[str, str] = {}
        if small:
            got = self._small_reference(small, drift_share)
            tests.update(got.tests)
            failed = got.failed
        page = self._sample_page([c for c in columns if c in tests], tests, drift_share)
        if not page.html:
            return Comparison(tests=tests, failed=failed, error=page.error)
        ref_n, cur_n = len(self.reference.sample), len(self.current.sample)
        notice = (
            f"computed on all rows ({self.n_reference} reference, {self.n_current} current); the charts "
            f"below are drawn from a systematic sample of {ref_n} reference and {cur_n} current rows "
            f"(sample CDFs within {dkw_epsilon(min(ref_n, cur_n)):.3f} of the full ones at 95%, DKW), "
            "so the scores printed on this page are the sample's"
        )
        return Comparison(
            tests=tests,
            failed=failed,
            html=page.html,
            snapshot=page.snapshot,
            notice={"verdicts": notice},
            error=page.error,
        )

    def _small_reference(self, cols: list[str], drift_share: float) -> Comparison:
        """Evidently's own p-value tests for columns whose reference has at most 1,000 values (cheap)."""
        kinds = {c: self.reference.columns[c].kind for c in cols}
        ref = pd.DataFrame({c: pd.Series(self.reference.columns[c].raw) for c in cols})
        cur = pd.DataFrame({c: clean(self.current_frame[c], kinds[c]) for c in cols})
        got = evidently_report(ref, cur, kinds, drift_share)
        # The raw values are every value: no binning error.
        return got.model_copy(
            update={"tests": {c: t.model_copy(update={"error_bound": 0.0}) for c, t in got.tests.items()}}
        )

    def _sample_page(self, compared: list[str], tests: dict[str, DriftTest], drift_share: float) -> Comparison:
        """Evidently's page and Snapshot over the row samples, each column's test pinned to the full-data one."""
        sample = prepare_frames(self.reference.sample, self.current.sample, compared)
        # A sample column typed unlike its profile (mixed types) is left off the page; its verdict stands.
        cols = [
            c
            for c in compared
            if not sample.stats[c].skip_reason(1) and sample.stats[c].kind_reference == self.reference.columns[c].kind
        ]
        if not cols:
            return Comparison()
        page = evidently_report(
            pd.DataFrame({c: sample.reference[c] for c in cols}),
            pd.DataFrame({c: sample.current[c] for c in cols}),
            {c: sample.stats[c].kind_reference for c in cols},
            drift_share,
            methods={c: stattest_key(tests[c].method) for c in cols},
        )
        # The verdicts stand without the page; only the summary says it failed.
        return page.model_copy(update={"error": f"report page: {page.error}"[:300] if page.error else ""})


def prepare_profiles(
    reference: pd.DataFrame | WindowProfile, current: pd.DataFrame, columns: list[str], report_rows: int
) -> ProfilePair:
    """Profile both windows (a `WindowProfile` reference is used as it is) and describe each column."""
    ref = reference if isinstance(reference, WindowProfile) else profile_window(reference, columns, report_rows)
    cur = profile_window(current, columns, report_rows)
    return ProfilePair(ref, cur, current, {c: _stats(c, ref, cur) for c in columns})


def _stats(col: str, ref: WindowProfile, cur: WindowProfile) -> ColumnStats:
    missing = [side for side, p in (("reference", ref), ("current", cur)) if col not in p.columns]
    if missing:
        return ColumnStats(column=col, missing_from=missing)
    r, c = ref.columns[col], cur.columns[col]
    return ColumnStats(
        column=col, kind_reference=r.kind, kind_current=c.kind, n_reference=r.n, n_current=c.n, distinct=_distinct(r, c)
    )


def _distinct(r: ColumnProfile, c: ColumnProfile) -> list[Any]:
    if r.resolution > 0 or c.resolution > 0:
        # A binned column has thousands of distinct values; two bin centres say as much.
        return (r if r.resolution > 0 else c).support[:2].tolist()
    return sorted(set(r.support.tolist()) | set(c.support.tolist()), key=str)[:2]
