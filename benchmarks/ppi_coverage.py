"""PPI coverage: does the judge-powered interval keep its 95% promise, and how much narrower is it?

A seeded simulation of a thumbs-rated window: every event has a true thumbs-up
(probability `P_UP`), n of them carry the human's thumbs and a judge's verdict, N = ratio x n
more carry only the judge's verdict. The judge is right with probability `accuracy` on
every event, whatever the truth (symmetric noise), which at P_UP = 0.7 spans Cohen's kappa
0.17 (accuracy 0.6) to 0.88 (accuracy 0.95). On each draw it computes, side by side:

- human only: the Wilson interval of the n human thumbs (what driftloop reports for a
  rated window, `driftloop.core.stats.wilson`);
- PPI++: `driftloop.core.ppi.ppi_mean` on the n pairs and the N judge-only verdicts,
  lambda tuned on the draw.

Per cell: the coverage of the true rate by each interval (Monte-Carlo standard error
about 0.5 points at 2,000 draws), their mean widths and the ratio PPI / human. The goals,
checked and printed at the end:

1. coverage of both intervals within 93-97% in every cell;
2. where accuracy >= 0.85 and N >= 10 n: the PPI interval at least 20% narrower;
3. everywhere: the PPI interval at most 5% wider than the human-only one.

Run:

    .venv/bin/python benchmarks/ppi_coverage.py            # the full table (docs/benchmarks.md)
    .venv/bin/python benchmarks/ppi_coverage.py --smoke    # a few cells, 200 draws: seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np

from driftloop.core.ppi import ppi_mean
from driftloop.core.stats import wilson

P_UP = 0.7  # true thumbs-up rate of the window
SIZES = [50, 100, 200, 500, 1000]
ACCURACIES = [0.6, 0.7, 0.8, 0.85, 0.9, 0.95]
RATIOS = [1, 10]  # N / n: judge-only events per human-rated one
COVERAGE = (0.93, 0.97)
NARROWER = 0.80  # goal 2: PPI width / human width at most this
WIDER = 1.05  # goal 3: at most this


def kappa(accuracy: float, p: float = P_UP) -> float:
    """Cohen's kappa of a symmetric-noise judge against the truth: (a - pe) / (1 - pe)."""
    q = p * accuracy + (1 - p) * (1 - accuracy)  # the judge's thumbs-up rate
    pe = p * q + (1 - p) * (1 - q)
    return (accuracy - pe) / (1 - pe)


@dataclass
class Cell:
    n: int
    big_n: int
    accuracy: float
    human_cover: float
    ppi_cover: float
    human_width: float
    ppi_width: float
    lam: float

    @property
    def ratio(self) -> float:
        return self.ppi_width / self.human_width


def run_cell(n: int, ratio: int, accuracy: float, reps: int, seed: int) -> Cell:
    """`reps` seeded draws of one cell; each draw is an independent window."""
    rng = np.random.default_rng([seed, n, ratio, int(accuracy * 1000)])
    big_n = ratio * n
    cover_h = cover_p = 0
    width_h = width_p = lam = 0.0
    for _ in range(reps):
        y = (rng.random(n) < P_UP).astype(float)
        judge_right = rng.random(n) < accuracy
        yhat = np.where(judge_right, y, 1 - y)
        y_u = rng.random(big_n) < P_UP
        yhat_u = np.where(rng.random(big_n) < accuracy, y_u, ~y_u).astype(float)
        _, lo, hi = wilson(int(y.sum()), n)
        assert lo is not None and hi is not None
        est = ppi_mean(y, yhat, yhat_u)
        cover_h += lo <= P_UP <= hi
        cover_p += est.ci_low <= P_UP <= est.ci_high
        width_h += hi - lo
        width_p += est.width
        lam += est.lam
    return Cell(n, big_n, accuracy, cover_h / reps, cover_p / reps, width_h / reps, width_p / reps, lam / reps)


def check(cells: list[Cell]) -> list[str]:
    """The goals each cell misses, one line per miss."""
    misses = []
    lo, hi = COVERAGE
    for c in cells:
        at = f"n={c.n}, N={c.big_n}, accuracy {c.accuracy:.2f}"
        for what, cov in (("human-only", c.human_cover), ("PPI", c.ppi_cover)):
            if not lo <= cov <= hi:
                misses.append(f"coverage: {what} {cov:.3f} outside [{lo}, {hi}] at {at}")
        if c.accuracy >= 0.85 and c.big_n >= 10 * c.n and c.ratio > NARROWER:
            misses.append(f"narrower: PPI / human width {c.ratio:.2f} > {NARROWER} at {at}")
        if c.ratio > WIDER:
            misses.append(f"never wider: PPI / human width {c.ratio:.2f} > {WIDER} at {at}")
    return misses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=2000, help="draws per cell")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="3 cells, 200 draws: checks the script runs")
    args = ap.parse_args(argv)
    sizes, accuracies, ratios, reps = SIZES, ACCURACIES, RATIOS, args.reps
    if args.smoke:
        sizes, accuracies, ratios, reps = [50], [0.6, 0.95], [10], min(reps, 200)
    t0 = time.perf_counter()
    print(f"true rate {P_UP}, {reps} draws per cell, 95% intervals, seed {args.seed}\n")
    print(
        "| n | N | judge accuracy | kappa | coverage human | coverage PPI | width human | width PPI | PPI / human | mean lambda |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    cells = []
    total = len(sizes) * len(accuracies) * len(ratios)
    for ratio in ratios:
        for n in sizes:
            for acc in accuracies:
                c = run_cell(n, ratio, acc, reps, args.seed)
                cells.append(c)
                print(
                    f"| {c.n} | {c.big_n} | {c.accuracy:.2f} | {kappa(c.accuracy):.2f} | {c.human_cover:.3f} | "
                    f"{c.ppi_cover:.3f} | {c.human_width:.3f} | {c.ppi_width:.3f} | {c.ratio:.2f} | {c.lam:.2f} |",
                    flush=True,
                )
                print(f"  [{len(cells)}/{total} cells, {time.perf_counter() - t0:.0f} s]", file=sys.stderr)
    misses = check(cells)
    print(f"\n{len(cells)} cells in {time.perf_counter() - t0:.0f} s; goals: {'all met' if not misses else 'MISSED'}")
    for m in misses:
        print(f"- {m}")
    return 0 if not misses or args.smoke else 1


if __name__ == "__main__":
    raise SystemExit(main())
