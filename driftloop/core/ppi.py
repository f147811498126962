"""Prediction-powered inference (PPI++) of a mean: few human labels, many judge predictions.

A judge (a model that rates responses) can score every event of a window, but only a
few events carry a human rating. PPI (Angelopoulos et al., Science 2023) combines the
two without trusting the judge: the judge's mean over the unlabelled events is
corrected by its average error on the labelled ones (the "rectifier"), so the estimate
is unbiased whatever the judge's quality. PPI++ (Angelopoulos, Duchi and Zrnic, 2023,
arXiv:2311.01453) weights the judge by a power-tuning factor lambda chosen to minimise
the estimate's variance: lambda near 1 for a judge that tracks the labels closely,
lambda 0 for a useless one, where the estimate *is* the human-only mean and its
interval the classical one. The interval is the CLT interval of the estimator,

    theta = lambda * mean(f(X_unlabelled)) + mean(Y - lambda * f(X_labelled))
    se^2  = lambda^2 * Var(f(X_unlabelled)) / N + Var(Y - lambda * f(X_labelled)) / n
    lambda = Cov(Y, f(X)) / ((1 + n / N) * Var(f(X)))      clipped to [0, 1]

(lambda as `ppi_py.ppi_mean_ci` tunes it: the covariance on the labelled items, the
variance over all predictions; tests/test_ppi.py checks the two agree).

Pure numpy, no I/O.

    >>> est = ppi_mean(y, yhat, yhat_unlabelled)
    >>> round(est.estimate, 3), est.lam > 0, est.width < est.classical_width
    (0.712, True, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from driftloop.core.stats import _z


@dataclass(frozen=True)
class PPIEstimate:
    """A mean estimated from n labels and N unlabelled predictions, beside the labels-only estimate."""

    estimate: float
    ci_low: float
    ci_high: float
    se: float
    lam: float  # the power-tuning weight of the judge: 0 = labels only, 1 = plain PPI
    n: int  # labelled items (a human label and a judge prediction each)
    n_unlabelled: int  # items with a judge prediction only
    classical: float  # mean of the labels alone
    classical_low: float  # its CLT interval (the PPI interval at lambda = 0)
    classical_high: float
    classical_se: float

    @property
    def width(self) -> float:
        return self.ci_high - self.ci_low

    @property
    def classical_width(self) -> float:
        return self.classical_high - self.classical_low


def _as_array(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(a)):
        raise ValueError(f"ppi_mean: {what} holds NaN or infinite values")
    return a


def power_tuning(y: np.ndarray, yhat: np.ndarray, yhat_unlabelled: np.ndarray, clip: bool = True) -> float:
    """PPI++'s variance-minimising lambda for a mean: Cov(Y, f) / ((1 + n/N) Var(f)).

    The covariance is taken on the labelled pairs and the judge's variance over all its
    predictions, labelled and unlabelled. `clip` keeps lambda in [0, 1]: a judge that
    anti-correlates with the labels gets weight 0, not a negative one. 0 where the judge
    is constant.
    """
    n, big_n = y.size, yhat_unlabelled.size
    if n < 2 or big_n < 1:
        return 0.0
    var_f = float(np.var(np.concatenate([yhat, yhat_unlabelled]), ddof=1))
    if var_f <= 0:
        return 0.0
    cov = float(np.sum((y - y.mean()) * (yhat - yhat.mean())) / (n - 1))
    lam = cov / ((1 + n / big_n) * var_f)
    return float(min(max(lam, 0.0), 1.0)) if clip else lam


def ppi_mean(
    y: Sequence[float] | np.ndarray,
    yhat: Sequence[float] | np.ndarray,
    yhat_unlabelled: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    lam: float | None = None,
) -> PPIEstimate:
    """PPI++ estimate of E[Y] with its CLT interval, and the labels-only estimate beside it.

    `y` are the n human labels, `yhat` the judge's predictions on the same items (same
    order), `yhat_unlabelled` its predictions on N further items drawn from the same
    traffic. `lam` None tunes lambda (`power_tuning`); 0 gives the classical estimate,
    1 plain PPI. Needs n >= 2. With no unlabelled item (N = 0) lambda is 0.
    """
    y_a = _as_array(y, "y")
    f_a = _as_array(yhat, "yhat")
    u_a = _as_array(yhat_unlabelled, "yhat_unlabelled")
    if y_a.size != f_a.size:
        raise ValueError(f"ppi_mean: {y_a.size} labels but {f_a.size} predictions on the labelled items")
    n, big_n = y_a.size, u_a.size
    if n < 2:
        raise ValueError(f"ppi_mean: needs at least 2 labelled items, got {n}")
    if lam is None:
        lam = power_tuning(y_a, f_a, u_a)
    if big_n == 0:
        lam = 0.0
    z = _z(confidence)
    rectifier = y_a - lam * f_a
    estimate = float(rectifier.mean() + (lam * u_a.mean() if big_n else 0.0))
    var_u = float(np.var(u_a, ddof=1)) if big_n > 1 else 0.0
    se = math.sqrt(lam * lam * var_u / max(big_n, 1) + float(np.var(rectifier, ddof=1)) / n)
    classical = float(y_a.mean())
    classical_se = math.sqrt(float(np.var(y_a, ddof=1)) / n)
    return PPIEstimate(
        estimate=estimate,
        ci_low=estimate - z * se,
        ci_high=estimate + z * se,
        se=se,
        lam=float(lam),
        n=n,
        n_unlabelled=big_n,
        classical=classical,
        classical_low=classical - z * classical_se,
        classical_high=classical + z * classical_se,
        classical_se=classical_se,
    )
