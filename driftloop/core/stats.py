"""Statistics the decisions rest on: intervals, paired tests, multiplicity, power.

Pure numpy/scipy, no I/O. Every function returns plain numbers so that callers
can quote them in a Decision's reasons.

    >>> wilson(81, 100)
    (0.81, 0.7222..., 0.8749...)
    >>> mcnemar_exact(b=2, c=14).p_value < 0.01
    True

Why here and not in `evaluators/`: the pure decision functions in
`driftloop.core.policy` need these, and the core must not import upward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class _LazyScipyStats:
    """`scipy.stats`, imported on first use: it takes most of a second, and a command that only
    reads cached figures never calls it."""

    def __getattr__(self, name: str):
        from scipy import stats

        return getattr(stats, name)


_st = _LazyScipyStats()


def _z(confidence: float) -> float:
    return float(_st.norm.ppf(0.5 + confidence / 2))


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """Proportion with its Wilson score interval; (None, None, None) when n == 0."""
    if n <= 0:
        return None, None, None
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float | None, float | None, float | None]:
    """Mean with a percentile bootstrap interval; (None, None, None) for an empty sample.

    Resampling uses counts drawn from a multinomial, so the cost is
    O(n_boot * distinct values) for the discrete ratings we see in practice.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = x.size
    if n == 0:
        return None, None, None
    mean = float(x.mean())
    if n == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    uniq, counts = np.unique(x, return_counts=True)
    draws = rng.multinomial(n, counts / n, size=n_boot)  # n_boot x distinct
    means = draws @ uniq / n
    lo, hi = np.quantile(means, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return mean, float(lo), float(hi)


@dataclass(frozen=True)
class PairedResult:
    """Challenger minus champion on shared items."""

    diff: float  # mean(challenger) - mean(champion)
    ci_low: float
    ci_high: float
    p_value: float  # two-sided test of no difference
    n: int
    b: int = 0  # champion right, challenger wrong
    c: int = 0  # champion wrong, challenger right
    test: str = ""
    centre: float = 0.0  # centre of the interval (Agresti-Min adjusted for 0/1 outcomes)
    se: float = 0.0  # standard error of the difference at `centre`

    def p_method(self, threshold: float = 0.0) -> str:
        """How `p_greater(threshold)` is computed, for a reason sentence."""
        if self.test == "mcnemar-exact":
            return "exact McNemar" if threshold == 0 else "Agresti-Min Wald z"
        if self.test == "paired-bootstrap-target":
            return "paired-bootstrap SE of the distance to target, normal z"
        return "paired-bootstrap SE, normal z"

    def p_greater(self, threshold: float = 0.0) -> float:
        """One-sided p-value of H0: true diff <= threshold against H1: diff > threshold.

        Superiority is `p_greater(min_improvement)`; non-inferiority with margin
        m is `p_greater(-m)`. For 0/1 outcomes and threshold 0 this is the exact
        one-sided McNemar (binomial) test on the discordant pairs; otherwise a
        normal test at the interval's centre and standard error.
        """
        if self.test == "mcnemar-exact" and threshold == 0:
            nd = self.b + self.c
            return 1.0 if nd == 0 else float(_st.binom.sf(self.c - 1, nd, 0.5))
        if self.n == 0:
            return 1.0
        if self.se == 0:
            return 0.0 if self.centre > threshold else 1.0
        return float(_st.norm.sf((self.centre - threshold) / self.se))


def mcnemar_exact(b: int, c: int) -> PairedResult:
    """Exact (binomial) McNemar test on the discordant counts b and c."""
    nd = b + c
    p = 1.0 if nd == 0 else float(min(1.0, 2 * _st.binom.cdf(min(b, c), nd, 0.5)))
    return PairedResult(diff=0.0, ci_low=0.0, ci_high=0.0, p_value=p, n=nd, b=b, c=c, test="mcnemar-exact")


def _pair(champion: Sequence[float], challenger: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a0 = np.asarray(champion, dtype=float)
    a1 = np.asarray(challenger, dtype=float)
    if a0.shape != a1.shape:
        raise ValueError("paired samples must have the same length")
    return a0, a1


def paired_binary(champion: Sequence[float], challenger: Sequence[float], confidence: float = 0.95) -> PairedResult:
    """Paired comparison of 0/1 outcomes: exact two-sided McNemar p-value and an
    interval on the difference of proportions (challenger minus champion).

    The interval is the Wald interval for paired proportions,
    diff +/- z * sqrt((b + c) - (b - c)^2 / n) / n, widened to Agresti-Min's
    adjustment (add 0.5 to each cell), which keeps coverage near nominal for small n.
    """
    a0, a1 = _pair(champion, challenger)
    n = a0.size
    if n == 0:
        return PairedResult(0.0, 0.0, 0.0, 1.0, 0, test="mcnemar-exact")
    b = int(np.sum((a0 == 1) & (a1 == 0)))
    c = int(np.sum((a0 == 0) & (a1 == 1)))
    base = mcnemar_exact(b, c)
    diff = (c - b) / n
    # Agresti-Min (2005): add 0.5 to every cell of the 2x2 table.
    bb, cc, nn = b + 0.5, c + 0.5, n + 2.0
    d = (cc - bb) / nn
    se = math.sqrt(max(((bb + cc) - (cc - bb) ** 2 / nn), 0.0)) / nn
    z = _z(confidence)
    return PairedResult(
        diff, max(-1.0, d - z * se), min(1.0, d + z * se), base.p_value, n, b, c, "mcnemar-exact", centre=d, se=se
    )


def paired_bootstrap(
    champion: Sequence[float],
    challenger: Sequence[float],
    confidence: float = 0.95,
    n_boot: int = 4000,
    seed: int = 0,
) -> PairedResult:
    """Paired bootstrap of the mean difference for continuous per-item metrics.

    The p-value is two-sided, from the bootstrap distribution of the centred
    difference (the share of resampled differences at least as extreme).
    """
    a0, a1 = _pair(champion, challenger)
    d = a1 - a0
    n = d.size
    if n == 0:
        return PairedResult(0.0, 0.0, 0.0, 1.0, 0, test="paired-bootstrap")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = d[idx].mean(axis=1)
    mean = float(d.mean())
    lo, hi = np.quantile(boots, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    centred = boots - mean
    p = float((np.sum(np.abs(centred) >= abs(mean)) + 1) / (n_boot + 1))
    return PairedResult(
        mean, float(lo), float(hi), min(1.0, p), n, test="paired-bootstrap", centre=mean, se=float(boots.std(ddof=1))
    )


def paired_target(
    champion: Sequence[float],
    challenger: Sequence[float],
    target: float,
    confidence: float = 0.95,
    n_boot: int = 4000,
    seed: int = 0,
) -> PairedResult:
    """Paired bootstrap of the change in distance to `target`: |mean(champion) - t| - |mean(challenger) - t|.

    Positive means the challenger is closer to the target (better). Items are resampled
    in pairs, so the correlation of the two models on the same items is kept; the
    interval is the percentile interval and `p_greater` a normal test at the point
    estimate with the bootstrap standard error (as `paired_bootstrap`). The two-sided
    p-value is the share of centred resampled statistics at least as extreme.
    """
    a0, a1 = _pair(champion, challenger)
    n = a0.size
    if n == 0:
        return PairedResult(0.0, 0.0, 0.0, 1.0, 0, test="paired-bootstrap-target")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = np.abs(a0[idx].mean(axis=1) - target) - np.abs(a1[idx].mean(axis=1) - target)
    point = float(abs(a0.mean() - target) - abs(a1.mean() - target))
    lo, hi = np.quantile(boots, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    p = float((np.sum(np.abs(boots - point) >= abs(point)) + 1) / (n_boot + 1))
    return PairedResult(
        point,
        float(lo),
        float(hi),
        min(1.0, p),
        n,
        test="paired-bootstrap-target",
        centre=point,
        se=float(boots.std(ddof=1)),
    )


def ni_sample_size(
    margin: float, sd_diff: float, alpha: float = 0.05, power: float = 0.8, true_diff: float = 0.0
) -> int:
    """Paired items needed for a one-sided non-inferiority test with `margin` to reach `power`.

    `sd_diff` is the standard deviation of the per-item difference (challenger - champion, in
    the metric's units; sqrt(discordant share) for 0/1 outcomes with equal accuracy), and
    `true_diff` the assumed true difference (0: the models are equally good). The normal
    formula n = ((z_alpha + z_power) * sd / (margin + true_diff))^2 is refined with t quantiles
    on n - 1 degrees of freedom (the gate estimates the standard error from the same items)
    until it is stable, then rounded up.
    """
    if margin <= 0 or sd_diff <= 0:
        raise ValueError("need margin > 0 and sd_diff > 0")
    effect = margin + true_diff
    if effect <= 0:
        raise ValueError("the assumed true loss is as large as the margin: no n has power")
    n = ((float(_st.norm.isf(alpha)) + float(_st.norm.ppf(power))) * sd_diff / effect) ** 2
    for _ in range(20):
        df = max(n - 1, 1.0)
        nxt = ((float(_st.t.isf(alpha, df)) + float(_st.t.ppf(power, df))) * sd_diff / effect) ** 2
        if abs(nxt - n) < 1e-6:
            break
        n = nxt
    return max(2, int(math.ceil(n)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> float:
    """One-sided p-value that proportion 2 is lower than proportion 1 (pooled z-test)."""
    if n1 == 0 or n2 == 0:
        return 1.0
    p = (x1 + x2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if x2 / n2 >= x1 / n1 else 0.0
    z = (x1 / n1 - x2 / n2) / se
    return float(_st.norm.sf(z))


def one_sided_p_below(successes: int, n: int, floor: float) -> float:
    """Exact binomial p-value that the true proportion is below `floor`."""
    if n == 0:
        return 1.0
    return float(_st.binom.cdf(successes, n, floor))


def paired_power(n: int, drop: float, discordant: float, alpha: float = 0.05) -> float:
    """Exact power of the one-sided exact McNemar test (p < alpha) to detect a drop of `drop`.

    Of n paired items a share `discordant` disagree; a disagreement goes the
    model's way with probability (discordant - drop) / (2 * discordant). The
    power sums, over the binomial number of discordant items, the chance that
    the losses reach the test's critical count.
    """
    if n <= 0:
        return 0.0
    nd = np.arange(n + 1)
    q = (discordant + drop) / (2 * discordant)  # share of discordant items the model now gets wrong
    k = _st.binom.ppf(1 - alpha, nd, 0.5).astype(int) + 1
    # Strict p < alpha: step up where the tail at k is not below alpha (ties in a discrete law).
    k = np.where(_st.binom.sf(k - 1, nd, 0.5) >= alpha, k + 1, k)
    return float(np.sum(_st.binom.pmf(nd, n, discordant) * _st.binom.sf(k - 1, nd, q)))


def paired_sample_size(drop: float, discordant: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Items needed for the one-sided exact McNemar test to detect a drop of `drop` in accuracy.

    `discordant` is the expected share of items on which the two models disagree
    (b + c) / n; it must exceed `drop`. Starts from Connor's (1987) normal
    approximation, then steps to the smallest n whose exact power (see
    `paired_power`) reaches `power` there and at the next 10 sizes, since the
    discrete test's power saw-tooths in n.
    """
    if not 0 < drop < discordant <= 1:
        raise ValueError("need 0 < drop < discordant share <= 1")
    za, zb = float(_st.norm.isf(alpha)), float(_st.norm.ppf(power))
    n0 = (za * math.sqrt(discordant) + zb * math.sqrt(discordant - drop * drop)) ** 2 / (drop * drop)
    n = max(1, int(0.9 * n0))
    cache: dict[int, float] = {}

    def ok(m: int) -> bool:
        if m not in cache:
            cache[m] = paired_power(m, drop, discordant, alpha)
        return cache[m] >= power

    while not all(ok(m) for m in range(n, n + 11)):
        n += 1
    return n
