"""Column profiles: small, exact summaries of a window from which drift statistics follow.

A profile holds, per column, what Evidently's default drift test for a large reference
needs, computed once over every row: the non-null count, the population standard
deviation and the distribution as (support, counts). Integer-valued and low-cardinality
columns keep their exact value counts; continuous columns with more than
`EXACT_MAX_UNIQUE` distinct values keep a `GRID_BINS`-bin histogram, which moves each
value by at most half a bin (the bound is carried with the profile). Profiles are
cheap to build (O(rows) with numpy), a few hundred KB at most, and can be saved, so a
reference window is profiled once and reused by every monitor run that compares to it.

    >>> ref = profile_window(reference_frame, ["prompt_len", "latency_ms", "topic"])
    >>> cur = profile_window(current_frame, ["prompt_len", "latency_ms", "topic"])
    >>> column_drift(ref.columns["latency_ms"], cur.columns["latency_ms"]).method
    'wasserstein'
    >>> ref.save(Path(".driftloop/profiles/ab12.npz")); WindowProfile.load(Path(".driftloop/profiles/ab12.npz"))

`column_drift` picks the test exactly as
`evidently.legacy.calculations.stattests.registry._get_default_stattest` does for a
reference above 1,000 non-null values (normed Wasserstein for numbers with more than 5
distinct values, Jensen-Shannon otherwise, both with threshold 0.1) and computes it with
the same scipy functions, on weighted supports instead of raw rows.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

from evaluators.drift_spec import DriftTest

# Above this many distinct values a continuous column is kept as a histogram.
EXACT_MAX_UNIQUE = 10_000
# 65,536 bins: the binned Wasserstein error is at most range/65,536 per window.
GRID_BINS = 1 << 16
# Evidently switches from p-value tests to distances above this many reference values.
EVIDENTLY_LARGE_REFERENCE = 1000
DEFAULT_THRESHOLD = 0.1  # Evidently's default for both wasserstein and jensenshannon
ALWAYS_CATEGORICAL = frozenset({"model_version"})


@dataclass
class ColumnProfile:
    """One column of one window: kind, non-null count and distribution.

    `support`/`counts`: distinct values (floats, or strings for categorical) and how
    often each occurs; for a binned column the support is the bin centres and
    `resolution` the bin width (0 when exact). `raw` keeps the values themselves when
    there are at most 1,000 of them, because Evidently's small-sample tests need them.
    """

    kind: str  # "numerical" or "categorical"
    n: int
    support: np.ndarray
    counts: np.ndarray
    std: float = 0.0
    resolution: float = 0.0
    raw: np.ndarray | None = None

    @property
    def nunique(self) -> int:
        """Distinct non-null values; a lower bound (> EXACT_MAX_UNIQUE) when binned."""
        return EXACT_MAX_UNIQUE + 1 if self.resolution > 0 else int(self.support.size)


@dataclass
class WindowProfile:
    """Profiles of a window's columns plus a systematic row sample for drawing the report."""

    n_rows: int
    columns: dict[str, ColumnProfile] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    sample: pd.DataFrame = field(default_factory=pd.DataFrame)

    def save(self, path: Path) -> None:
        """Write the profile to one .npz file (written to a temporary name, then renamed)."""
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"n_rows": self.n_rows, "missing": self.missing, "columns": {}}
        for i, (name, p) in enumerate(self.columns.items()):
            meta["columns"][name] = {
                "i": i,
                "kind": p.kind,
                "n": p.n,
                "std": p.std,
                "resolution": p.resolution,
                "raw": p.raw is not None,
            }
            if p.kind == "categorical":
                meta["columns"][name]["support"] = [str(v) for v in p.support]
            else:
                arrays[f"s{i}"] = p.support.astype(np.float64)
            arrays[f"c{i}"] = p.counts.astype(np.int64)
            if p.raw is not None:
                if p.kind == "categorical":
                    meta["columns"][name]["raw_values"] = [str(v) for v in p.raw]
                else:
                    arrays[f"r{i}"] = p.raw.astype(np.float64)
        buf = io.BytesIO()
        self.sample.to_parquet(buf, index=False)
        arrays["sample"] = np.frombuffer(buf.getvalue(), dtype=np.uint8)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> WindowProfile:
        """Read a profile written by `save`."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            sample = pd.read_parquet(io.BytesIO(bytes(z["sample"])))
            cols: dict[str, ColumnProfile] = {}
            for name, m in meta["columns"].items():
                i = m["i"]
                if m["kind"] == "categorical":
                    support = np.array(m["support"], dtype=object)
                    raw = np.array(m["raw_values"], dtype=object) if m["raw"] else None
                else:
                    support = z[f"s{i}"]
                    raw = z[f"r{i}"] if m["raw"] else None
                cols[name] = ColumnProfile(
                    m["kind"], int(m["n"]), support, z[f"c{i}"], float(m["std"]), float(m["resolution"]), raw
                )
        return cls(int(meta["n_rows"]), cols, list(meta["missing"]), sample)


def is_numerical(col: str, s: pd.Series) -> bool:
    """Numeric, non-bool columns are numerical; everything else (and model_version) categorical."""
    return (
        col not in ALWAYS_CATEGORICAL
        and pd.api.types.is_numeric_dtype(s.dtype)
        and not pd.api.types.is_bool_dtype(s.dtype)
    )


def profile_window(frame: pd.DataFrame, features: list[str], sample_rows: int = 20_000) -> WindowProfile:
    """Profile `features` of `frame` over every row, and keep a systematic sample of rows.

    The sample takes `sample_rows` rows at evenly spaced positions (the store orders a
    window by time, so this is a sample stratified by time); it only draws the report.
    Infinities count as missing, as in Evidently. Columns absent from the frame are
    listed in `missing`.
    """
    prof = WindowProfile(n_rows=len(frame))
    for col in dict.fromkeys(features):
        if col not in frame.columns:
            prof.missing.append(col)
            continue
        prof.columns[col] = profile_column(col, frame[col])
    present = [c for c in dict.fromkeys(features) if c in frame.columns]
    if len(frame) > sample_rows:
        idx = np.unique(np.linspace(0, len(frame) - 1, sample_rows).astype(np.int64))
        prof.sample = frame[present].iloc[idx].reset_index(drop=True)
    else:
        prof.sample = frame[present].reset_index(drop=True)
    return prof


def profile_column(col: str, s: pd.Series) -> ColumnProfile:
    """The profile of one column (see `ColumnProfile`)."""
    if is_numerical(col, s):
        v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        v = v[np.isfinite(v)]
        return _numeric(v)
    counts = s.dropna().value_counts(sort=False)
    counts = counts[counts > 0]  # a pandas Categorical lists unobserved categories with count 0
    if counts.empty:
        return ColumnProfile("categorical", 0, np.array([], dtype=object), np.array([], dtype=np.int64))
    # Mixed types (1 and "1") are one category once written as text, as in the report.
    by_text = counts.groupby(counts.index.map(str)).sum()
    raw = None
    if int(by_text.sum()) <= EVIDENTLY_LARGE_REFERENCE:
        raw = s.dropna().map(str).to_numpy(dtype=object)
    return ColumnProfile(
        "categorical",
        int(by_text.sum()),
        by_text.index.to_numpy(dtype=object),
        by_text.to_numpy(dtype=np.int64),
        raw=raw,
    )


def _numeric(v: np.ndarray) -> ColumnProfile:
    n = int(v.size)
    if n == 0:
        return ColumnProfile("numerical", 0, np.array([]), np.array([], dtype=np.int64))
    std = float(np.std(v))
    raw = v.copy() if n <= EVIDENTLY_LARGE_REFERENCE else None
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1_000_000 and np.all(v == np.floor(v)):
        # Integer-valued (lengths, token counts): exact counts in O(rows).
        counts = np.bincount((v - lo).astype(np.int64))
        nz = np.flatnonzero(counts)
        return ColumnProfile("numerical", n, nz.astype(np.float64) + lo, counts[nz], std, 0.0, raw)
    probe = np.unique(v[:: max(1, n // 20_000)])
    if probe.size <= EXACT_MAX_UNIQUE // 5:
        support, counts = np.unique(v, return_counts=True)
        if support.size <= EXACT_MAX_UNIQUE:
            return ColumnProfile("numerical", n, support, counts, std, 0.0, raw)
    width = (hi - lo) / GRID_BINS
    counts, edges = np.histogram(v, bins=GRID_BINS, range=(lo, hi))
    nz = np.flatnonzero(counts)
    return ColumnProfile("numerical", n, (edges[nz] + edges[nz + 1]) / 2, counts[nz], std, width, raw)


def column_drift(ref: ColumnProfile, cur: ColumnProfile) -> DriftTest:
    """Evidently's large-reference drift test on two profiles of one column.

    The score is a distance; `error_bound` bounds |score - score on the raw rows| (0 when
    both profiles are exact; for binned numbers (ref.resolution + cur.resolution) / 2
    divided by the norm, since binning moves each value by at most half a bin and
    Wasserstein-1 is a mean absolute displacement). Requires ref.n > 1,000; smaller
    references use Evidently's p-value tests on the raw values instead.
    """
    numerical = ref.kind == "numerical" and cur.kind == "numerical"
    if numerical and _union_size(ref, cur) > 5:
        norm = max(ref.std, 0.001)  # Evidently's floor on the norm
        score = stats.wasserstein_distance(ref.support, cur.support, ref.counts, cur.counts) / norm
        bound = (ref.resolution + cur.resolution) / 2 / norm
        method = "wasserstein"
    else:
        keys = _union_keys(ref, cur)
        p = _aligned(ref, keys) / ref.n
        q = _aligned(cur, keys) / cur.n
        score = float(distance.jensenshannon(p, q))
        bound = 0.0
        method = "jensenshannon"
    score = float(score)
    return DriftTest(
        method=method,
        score=score,
        threshold=DEFAULT_THRESHOLD,
        score_kind="distance",
        drifted=score >= DEFAULT_THRESHOLD,
        error_bound=float(bound),
    )


def _union_size(ref: ColumnProfile, cur: ColumnProfile) -> int:
    if ref.resolution > 0 or cur.resolution > 0:
        return EXACT_MAX_UNIQUE + 1
    return int(np.union1d(ref.support, cur.support).size)


def _union_keys(ref: ColumnProfile, cur: ColumnProfile) -> list[Any]:
    # Evidently's key order does not change the distance; a sorted union keeps it deterministic.
    return sorted(set(ref.support.tolist()) | set(cur.support.tolist()), key=lambda k: (str(type(k)), k))


def _aligned(p: ColumnProfile, keys: list[Any]) -> np.ndarray:
    lookup = dict(zip(p.support.tolist(), p.counts.tolist()))
    return np.array([lookup.get(k, 0) for k in keys], dtype=np.float64)
