"""PPI++ mean estimation (driftloop.core.ppi), checked against the reference implementation
`ppi_py` (the `dev` extra), and the coverage benchmark's smoke mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from driftloop.core.ppi import power_tuning, ppi_mean

ROOT = Path(__file__).resolve().parents[1]


def draw(n: int, big_n: int, accuracy: float, p: float = 0.7, seed: int = 0):
    """Human thumbs on n events, a judge right with probability `accuracy` on those and on N more."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < p).astype(float)
    yhat = np.where(rng.random(n) < accuracy, y, 1 - y)
    y_u = rng.random(big_n) < p
    yhat_u = np.where(rng.random(big_n) < accuracy, y_u, ~y_u).astype(float)
    return y, yhat, yhat_u


@pytest.mark.parametrize("n,big_n,accuracy", [(50, 500, 0.9), (200, 2000, 0.7), (300, 300, 0.95), (100, 5000, 0.55)])
def test_matches_ppi_py_point_estimate_lambda_and_interval(n, big_n, accuracy):
    ppi_py = pytest.importorskip("ppi_py")
    y, yhat, yhat_u = draw(n, big_n, accuracy, seed=n)
    ours = ppi_mean(y, yhat, yhat_u, confidence=0.95)
    # Fixed lambda: the same estimator, so the same point to rounding.
    for lam in (0.0, 0.5, 1.0):
        fixed = ppi_mean(y, yhat, yhat_u, lam=lam)
        ref = float(np.ravel(ppi_py.ppi_mean_pointestimate(y, yhat, yhat_u, lam=lam))[0])
        assert fixed.estimate == pytest.approx(ref, abs=1e-12)
        lo, hi = (float(np.ravel(v)[0]) for v in ppi_py.ppi_mean_ci(y, yhat, yhat_u, alpha=0.05, lam=lam))
        # ppi_py's standard deviations divide by n, ours by n - 1 (a hair wider at small n).
        assert (fixed.ci_high - fixed.ci_low) / (hi - lo) == pytest.approx(1.0, abs=1.2 / n)
        assert fixed.estimate == pytest.approx((lo + hi) / 2, abs=1e-12)
    # Tuned lambda: ppi_py's covariance divides by n (ours n - 1); the two agree to O(1/n).
    ref_point = float(np.ravel(ppi_py.ppi_mean_pointestimate(y, yhat, yhat_u))[0])
    assert ours.estimate == pytest.approx(ref_point, abs=0.002)
    lo, hi = (float(np.ravel(v)[0]) for v in ppi_py.ppi_mean_ci(y, yhat, yhat_u, alpha=0.05))
    assert ours.ci_low == pytest.approx(lo, abs=0.004)
    assert ours.ci_high == pytest.approx(hi, abs=0.004)


def test_a_good_judge_narrows_the_interval_and_a_useless_one_falls_back_to_the_labels():
    y, yhat, yhat_u = draw(200, 4000, 0.95, seed=1)
    good = ppi_mean(y, yhat, yhat_u)
    assert good.lam > 0.6
    assert good.width < 0.65 * good.classical_width
    # A judge that ignores the item (coin flips): lambda ~ 0, the human-only estimate and interval.
    rng = np.random.default_rng(2)
    noise = ppi_mean(y, rng.integers(0, 2, 200).astype(float), rng.integers(0, 2, 4000).astype(float))
    assert noise.lam < 0.15
    assert noise.width == pytest.approx(noise.classical_width, rel=0.05)
    # Anti-correlated: clipped to 0, exactly the classical figures.
    anti = ppi_mean(y, 1 - y, yhat_u)
    assert anti.lam == 0.0
    assert (anti.estimate, anti.ci_low, anti.ci_high) == pytest.approx(
        (anti.classical, anti.classical_low, anti.classical_high)
    )


def test_estimate_is_unbiased_for_a_biased_judge():
    """A judge that says `good` far too often still gives the right mean: the rectifier removes its bias."""
    rng = np.random.default_rng(3)
    estimates = []
    for _ in range(400):
        y = (rng.random(100) < 0.6).astype(float)
        yhat = np.where(y == 1, 1.0, (rng.random(100) < 0.5).astype(float))  # half the bad ones called good
        y_u = rng.random(1000) < 0.6
        yhat_u = np.where(y_u, 1.0, (rng.random(1000) < 0.5).astype(float))
        estimates.append(ppi_mean(y, yhat, yhat_u).estimate)
    assert yhat_u.mean() > 0.75  # the judge alone is far off
    assert np.mean(estimates) == pytest.approx(0.6, abs=0.01)


def test_edge_cases():
    assert power_tuning(np.array([1.0, 0.0]), np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.0  # constant judge
    est = ppi_mean([1, 0, 1], [1, 0, 1], [])  # no unlabelled events: the labels alone
    assert est.lam == 0.0 and est.estimate == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="at least 2 labelled"):
        ppi_mean([1], [1], [0, 1])
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        ppi_mean([1, 0, 1], [1, 0], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        ppi_mean([1, 0], [1, float("nan")], [0, 1])


def test_coverage_benchmark_smoke():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ppi_coverage.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| 50 |")]
    assert len(rows) == 2
    by_accuracy = {float(r[3]): float(r[9]) for r in rows}  # judge accuracy -> PPI / human width
    assert by_accuracy[0.95] < 0.7  # a 0.95-accurate judge on 10x the events: far narrower
    assert by_accuracy[0.6] < 1.05  # a poor one: about as wide as the humans alone
