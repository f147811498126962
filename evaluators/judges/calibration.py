"""A judge's agreement with the humans: Cohen's kappa with a bootstrap interval, the 2x2 counts, per segment.

On the events that carry both a human label and a judge's verdict, each reduced to
good / bad (a thumbs-up, or a rating >= 0.5; a verdict score >= 0.5), `agreement` gives
Cohen's kappa (scikit-learn's `cohen_kappa_score`), the confusion counts
(`confusion_matrix`) and a percentile bootstrap interval of kappa. Resampling the pairs
of two binary labels is drawing the four cell counts from a multinomial, so the 2,000
resamples cost one vectorised formula, not 2,000 calls.

    >>> a = agreement(np.array([1, 1, 0, 1]), np.array([1, 0, 0, 1]))
    >>> a.n, a.both_good, a.human_only_good, round(a.kappa, 2)
    (4, 2, 1, 0.5)
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from driftloop.core.judging import Agreement, JudgeCalibration

N_BOOT = 2000
SEED = 0  # seeded per segment, so a window always yields the same intervals


def _kappa_from_cells(cells: np.ndarray) -> np.ndarray:
    """Cohen's kappa of 2x2 tables given as rows (both good, human-only good, judge-only good, both bad)."""
    tp, fn, fp, tn = (cells[..., i].astype(float) for i in range(4))
    n = tp + fn + fp + tn
    po = (tp + tn) / n
    pe = ((tp + fn) * (tp + fp) + (fp + tn) * (fn + tn)) / (n * n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pe < 1, (po - pe) / (1 - pe), np.nan)


def agreement(
    human: np.ndarray,
    judge: np.ndarray,
    segment: dict[str, str] | None = None,
    confidence: float = 0.95,
    n_boot: int = N_BOOT,
) -> Agreement:
    """Cohen's kappa of `judge` against `human` (both good/bad arrays, same events), with its interval.

    kappa is None where it is undefined: no events, or both raters used one verdict
    only. The bootstrap interval skips resamples where kappa is undefined.
    """
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    h = np.asarray(human, dtype=bool)
    j = np.asarray(judge, dtype=bool)
    segment = segment or {}
    n = int(h.size)
    if n == 0:
        return Agreement(n=0, kappa=None, segment=segment)
    (tn, fp), (fn, tp) = confusion_matrix(h, j, labels=[False, True])
    cells = np.array([tp, fn, fp, tn])
    kappa = None
    if np.isfinite(_kappa_from_cells(cells)):  # undefined where both raters used one and the same verdict
        kappa = float(cohen_kappa_score(h, j, labels=[False, True]))
    low = high = None
    if kappa is not None:
        seed = [SEED, zlib.crc32(repr(sorted(segment.items())).encode("utf-8"))]
        boots = _kappa_from_cells(np.random.default_rng(seed).multinomial(n, cells / n, size=n_boot))
        boots = boots[np.isfinite(boots)]
        if boots.size:
            low, high = (float(x) for x in np.quantile(boots, [(1 - confidence) / 2, (1 + confidence) / 2]))
    return Agreement(
        n=n,
        kappa=kappa,
        kappa_low=low,
        kappa_high=high,
        both_good=int(tp),
        human_only_good=int(fn),
        judge_only_good=int(fp),
        both_bad=int(tn),
        segment=segment,
    )


def calibrate(
    judge: str,
    label: str,
    human: pd.Series,
    scores: pd.Series,
    segments: pd.DataFrame,
    segment_fields: list[str],
    confidence: float = 0.95,
) -> JudgeCalibration:
    """Agreement overall and per group of each segment field, on the events with a label and a score.

    `human` holds the label (thumbs 0/1 or a rating in [0, 1], NaN where none), `scores` the
    judge's score in [0, 1] (NaN where it gave none), `segments` the segment columns; all
    share one index.
    """
    both = human.notna() & scores.notna()
    h = human[both].to_numpy(dtype=float) >= 0.5
    j = scores[both].to_numpy(dtype=float) >= 0.5
    groups = []
    for field in segment_fields:
        if field not in segments.columns:
            continue
        col = segments.loc[both, field].astype("string")
        for value in sorted(v for v in col.dropna().unique() if v != ""):
            mask = (col == value).to_numpy(dtype=bool)
            groups.append(agreement(h[mask], j[mask], {field: str(value)}, confidence))
    return JudgeCalibration(
        judge=judge,
        label=label,
        overall=agreement(h, j, {}, confidence),
        segments=groups,
        judged=int(scores.notna().sum()),
    )
