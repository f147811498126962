"""Feedback quality of one window, overall and per segment, each figure with its interval.

`quality_metrics` turns a window frame (one row per feedback event, as the store builds
it) into MetricResults: `thumbs_up_rate` and `correction_rate` with Wilson intervals and
`mean_rating` with a seeded bootstrap interval, overall and for every group of every
segment field. `segment_gaps` finds, per segment field, the worst and the best group and
the gap between them (source "bias"). Neither sets a verdict: thresholds belong to the
policy, which reads `n` and the intervals. Groups below `min_n` carry the note
"insufficient data (n=...)".

    >>> ms = quality_metrics(window, ["topic"])
    >>> {m.label(): round(m.value, 2) for m in ms if m.name == "thumbs_up_rate"}
    {'thumbs_up_rate': 0.78, 'thumbs_up_rate[topic=account]': 0.86, 'thumbs_up_rate[topic=billing]': 0.41}
    >>> gap = segment_gaps(window, ["topic"])[0]
    >>> gap.segment, round(gap.value, 2)
    ({'field': 'topic', 'worst': 'billing', 'best': 'account'}, 0.45)

Events whose segment value is missing or "" count in the overall figures only: an
absent value is not a group of users.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from driftloop.core.stats import bootstrap_mean, wilson
from driftloop.core.types import MetricResult

SEED = 0  # every bootstrap here is seeded, so a window always yields the same intervals
N_BOOT = 2000


@dataclass(frozen=True)
class _Spec:
    column: str
    kind: str  # "proportion" (0/1 outcomes, Wilson) or "mean" (bootstrap)
    higher_is_better: bool


METRICS: dict[str, _Spec] = {
    "thumbs_up_rate": _Spec("thumbs_up", "proportion", True),
    "correction_rate": _Spec("has_correction", "proportion", False),
    "mean_rating": _Spec("rating", "mean", True),
}


def quality_metrics(
    frame: pd.DataFrame, segment_fields: list[str], min_n: int = 30, confidence: float = 0.95
) -> list[MetricResult]:
    """Thumbs-up rate, correction rate and mean rating, overall and per segment group.

    For each metric, in the order of `METRICS`: the overall figure (segment {}), then
    one figure per group of each field in `segment_fields` (segment {field: value},
    groups sorted by value). `n` counts the non-null observations of that metric; the
    interval is Wilson for the two rates and a percentile bootstrap (seed `SEED`) for
    the mean rating. Where n < `min_n` the value and interval are still reported, with
    the note "insufficient data (n=...)"; n == 0 gives value None. `threshold` and
    `passed` stay None: the policy sets them. A missing metric or segment column means
    no observations, not an error.
    """
    out: list[MetricResult] = []
    codes: dict[str, tuple[np.ndarray, list[str]]] = {}  # each field factorised once for all metrics
    for name, spec in METRICS.items():
        values = _values(frame, spec)
        out.append(_result(name, spec, values.to_numpy(), {}, min_n, confidence))
        for field in segment_fields:
            for group, vals in _groups(frame, field, values, codes):
                out.append(_result(name, spec, vals, {field: group}, min_n, confidence))
    return out


def segment_gaps(
    frame: pd.DataFrame,
    segment_fields: list[str],
    metric: str = "thumbs_up_rate",
    min_n: int = 30,
    confidence: float = 0.95,
) -> list[MetricResult]:
    """Per segment field, how far the worst group trails the best one on `metric`.

    Only groups with at least `min_n` observations are eligible; the others are listed
    in the note as "insufficient data (n=...)". The result is named "segment_gap" with
    segment {"field", "worst", "best"}, value = best minus worst in the metric's good
    direction (so >= 0, higher_is_better False), n = observations in the two groups,
    and a percentile bootstrap interval that resamples within each of the two groups
    (seeded per field). The interval is conditional on which groups came out worst and
    best. Fewer than two eligible groups gives value None with a note saying why.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown quality metric {metric!r}; choose one of {', '.join(METRICS)}")
    spec = METRICS[metric]
    values = _values(frame, spec)
    out: list[MetricResult] = []
    for field in segment_fields:
        stats = []  # (value, group, observations)
        small = []
        for group, vals in _groups(frame, field, values):
            vals = vals[~np.isnan(vals)]
            if vals.size >= min_n:
                stats.append((_estimate(spec, vals, confidence)[0], group, vals))
            else:
                small.append(f"{group}: insufficient data (n={vals.size})")
        excluded = f"; excluded (< {min_n}): {', '.join(small)}" if small else ""
        if len(stats) < 2:
            why = (
                f"segment field {field!r} is not in the frame"
                if field not in frame.columns
                else (f"{len(stats)} group(s) with n >= {min_n}, need 2")
            )
            out.append(
                MetricResult(
                    name="segment_gap",
                    value=None,
                    n=sum(s[2].size for s in stats),
                    higher_is_better=False,
                    source="bias",
                    segment={"field": field},
                    note=f"insufficient data: {why}{excluded}",
                )
            )
            continue
        sign = 1.0 if spec.higher_is_better else -1.0
        # Ties go to the alphabetically first group, so a frame always names the same groups.
        worst = min(stats, key=lambda s: (sign * s[0], s[1]))
        best = min((s for s in stats if s is not worst), key=lambda s: (-sign * s[0], s[1]))
        gap = sign * (best[0] - worst[0])
        rng = np.random.default_rng([SEED, zlib.crc32(field.encode("utf-8"))])
        boot = _boot_means(spec, best[2], rng) - _boot_means(spec, worst[2], rng)
        if not spec.higher_is_better:
            boot = -boot
        lo, hi = np.quantile(boot, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
        out.append(
            MetricResult(
                name="segment_gap",
                value=float(gap),
                ci_low=float(lo),
                ci_high=float(hi),
                n=int(worst[2].size + best[2].size),
                higher_is_better=False,
                source="bias",
                segment={"field": field, "worst": worst[1], "best": best[1]},
                note=(
                    f"{metric}: worst {field}={worst[1]} {worst[0]:.3f} (n={worst[2].size}), "
                    f"best {field}={best[1]} {best[0]:.3f} (n={best[2].size}); "
                    f"{len(stats)} eligible groups{excluded}"
                ),
            )
        )
    return out


def _values(frame: pd.DataFrame, spec: _Spec) -> pd.Series:
    """The metric's observations as floats, NaN where there is none (0/1 for the rates)."""
    if spec.column not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    raw = frame[spec.column]
    if pd.api.types.is_bool_dtype(raw.dtype):
        vals = raw.astype("float64")
    elif pd.api.types.is_numeric_dtype(raw.dtype):
        # Plain and nullable numbers alike, without a trip through Python objects (a million rows: ms, not s).
        vals = pd.Series(raw.to_numpy(dtype="float64", na_value=np.nan), index=raw.index)
    else:
        # object columns may mix True/False/None; to_numeric maps bools to 1/0 and the rest to NaN.
        vals = pd.to_numeric(raw.astype(object).where(raw.notna(), np.nan), errors="coerce").astype("float64")
    vals = vals.where(np.isfinite(vals))
    if spec.kind == "proportion":
        vals = vals.where(vals.isna(), (vals >= 0.5).astype("float64"))
    return vals


def _groups(
    frame: pd.DataFrame, field: str, values: pd.Series, cache: dict[str, tuple[np.ndarray, list[str]]] | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """(group value, observations with NaN kept) for every named group of `field`, sorted by value.

    NaN stays in, so every metric reports the same groups; a group without observations
    of one metric then shows as n=0 rather than vanishing. Values are grouped by their
    text (1 and "1" are one group), factorised once per column, so a million rows cost
    one pass rather than one string conversion per row.
    """
    if field not in frame.columns:
        return
    if cache is None or field not in cache:
        found = _field_codes(frame[field])
        if cache is not None:
            cache[field] = found
    codes, names = cache[field] if cache is not None else found
    vals = values.to_numpy(dtype=np.float64, na_value=np.nan)
    keep = codes >= 0
    kept = codes[keep]
    # A stable sort of 16-bit keys is a radix sort in numpy: O(rows), ~10x faster than on int64.
    order = np.argsort(kept.astype(np.int16) if len(names) < 32_000 else kept, kind="stable")
    sorted_vals = vals[keep][order]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(kept, minlength=len(names)))])
    for i in sorted(range(len(names)), key=lambda i: names[i]):
        yield names[i], sorted_vals[bounds[i] : bounds[i + 1]]


def _field_codes(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(code per row, -1 for missing or "", group names): rows with the same text share a code."""
    raw_codes, uniques = pd.factorize(col, use_na_sentinel=True)
    text: dict[str, int] = {}
    remap = np.array([text.setdefault(str(u), len(text)) for u in uniques] + [-1], dtype=np.int64)
    codes = remap[raw_codes]  # raw code -1 (missing) picks the trailing -1
    names = list(text)
    if "" in text:  # an empty value is not a group
        empty = text[""]
        codes = np.where(codes == empty, -1, codes - (codes > empty))
        names.pop(empty)
    return codes, names


def _estimate(spec: _Spec, vals: np.ndarray, confidence: float) -> tuple[float | None, float | None, float | None]:
    vals = vals[~np.isnan(vals)]
    if spec.kind == "proportion":
        return wilson(int(vals.sum()), int(vals.size), confidence)
    return bootstrap_mean(vals, confidence=confidence, n_boot=N_BOOT, seed=SEED)


def _result(
    name: str, spec: _Spec, vals: np.ndarray, segment: dict[str, str], min_n: int, confidence: float
) -> MetricResult:
    vals = vals[~np.isnan(vals)]
    value, lo, hi = _estimate(spec, vals, confidence)
    n = int(vals.size)
    return MetricResult(
        name=name,
        value=value,
        ci_low=lo,
        ci_high=hi,
        n=n,
        higher_is_better=spec.higher_is_better,
        source="quality",
        segment=segment,
        note=f"insufficient data (n={n})" if n < min_n else "",
    )


def _boot_means(spec: _Spec, vals: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """N_BOOT bootstrap means of one group, resampled within the group.

    Counts are drawn from a multinomial over the distinct values (a binomial for 0/1
    outcomes), which is the ordinary bootstrap at O(distinct values) cost per draw.
    """
    vals = vals[~np.isnan(vals)]
    n = vals.size
    if spec.kind == "proportion":
        return rng.binomial(n, vals.mean(), size=N_BOOT) / n
    uniq, counts = np.unique(vals, return_counts=True)
    return rng.multinomial(n, counts / n, size=N_BOOT) @ uniq / n
