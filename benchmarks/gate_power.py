"""Gate power: driftloop's paired tests against a point-threshold gate, on the same draws.

A seeded simulation of a golden set scored by two models (champion and
challenger, or the serving model before and after a drift). Each draw gives
per-item 0/1 outcomes with a chosen share of discordant items and a chosen true
drop. On every draw it runs, side by side:

- driftloop: the real `driftloop.policy.gate` (one-sided exact McNemar) for
  promotion, and the paired one-sided exact McNemar that `driftloop plan`
  sizes (`stats.paired_binary(...).p_greater`) for regression detection;
- a point gate of the MLflow MetricThreshold kind: promote when
  `challenger >= champion - threshold`, flag a regression otherwise.

With no true difference it reports the false-promotion and false-trigger
rates; with true drops of 2, 5 and 10 points, the detection power. Run:

    .venv/bin/python benchmarks/gate_power.py            # markdown table, ~2 min on 2 cores
    .venv/bin/python benchmarks/gate_power.py --reps 300 # quicker, noisier
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from driftloop import stats
from driftloop.config import PolicyConfig
from driftloop.policy import gate
from driftloop.types import Action, SampleResults

SIZES = [50, 100, 200, 500, 1000, 2000]
DROPS = [0.0, 0.02, 0.05, 0.10]
ACCURACY = 0.70  # champion's true accuracy on the golden set


def discordance(drop: float) -> float:
    """Share of items the two models disagree on: `driftloop plan`'s default, 2 x drop + 0.05;
    with no difference, 0.15 (the 5-point case's share)."""
    return 0.15 if drop == 0 else 2 * drop + 0.05


def draw(rng: np.random.Generator, n: int, drop: float) -> tuple[np.ndarray, np.ndarray]:
    """Champion and challenger 0/1 outcomes on n shared items; the challenger is `drop` worse."""
    d = discordance(drop)
    b, c = (d + drop) / 2, (d - drop) / 2  # champion-only right, challenger-only right
    both = ACCURACY - b
    u = rng.random(n)
    champ = (u < both + b).astype(int)
    chall = ((u < both) | ((u >= both + b) & (u < both + b + c))).astype(int)
    return champ, chall


def _samples(outcomes: np.ndarray) -> SampleResults:
    return SampleResults(task="golden", model="m", items={f"i{k}": float(v) for k, v in enumerate(outcomes)})


def simulate(n: int, drop: float, reps: int, policy: PolicyConfig, threshold: float, seed: int) -> dict[str, float]:
    """Rates over `reps` seeded draws: promotions and regression flags, driftloop vs the point gate."""
    rng = np.random.default_rng([seed, n, int(round(drop * 1000))])
    dl_promote = dl_flag = pt_promote = pt_flag = 0
    for _ in range(reps):
        champ, chall = draw(rng, n, drop)
        d = gate({"golden": [_samples(chall)]}, {"golden": [_samples(champ)]}, {"golden": "target"}, policy)
        dl_promote += d.action == Action.PROMOTE
        # Regression: is the challenger (the model now) worse than the champion (the model before)?
        dl_flag += stats.paired_binary(chall, champ).p_greater(0.0) < policy.alpha
        passed = chall.mean() >= champ.mean() - threshold
        pt_promote += passed
        pt_flag += not passed
    return {"dl_promote": dl_promote / reps, "dl_flag": dl_flag / reps,
            "pt_promote": pt_promote / reps, "pt_flag": pt_flag / reps}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000, help="seeded draws per cell")
    ap.add_argument("--threshold", type=float, default=0.02, help="the point gate's tolerance, accuracy points")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    policy = PolicyConfig(alpha=args.alpha, min_n=30)
    planned = stats.paired_sample_size(0.05, discordance(0.05), alpha=args.alpha, power=0.8)
    sizes = sorted(set(SIZES + [planned]))
    t0 = time.monotonic()
    rows, failures = [], []
    for n in sizes:
        for drop in DROPS:
            r = simulate(n, drop, args.reps, policy, args.threshold, args.seed)
            rows.append((n, drop, r))
            if drop == 0 and (r["dl_promote"] > args.alpha or r["dl_flag"] > args.alpha):
                failures.append(f"n={n}: false alarms above alpha")
            if n == planned and drop == 0.05 and r["dl_flag"] < 0.8:
                failures.append(f"n={n}: power {r['dl_flag']:.2f} < 0.80 for a 5-point drop")
    print(f"Gate power: {args.reps} seeded draws per cell, champion accuracy {ACCURACY:.2f}, discordant share "
          f"2 x drop + 0.05 (0.15 with no difference), alpha={args.alpha}, point-gate threshold {args.threshold}; "
          f"`driftloop plan --drop 0.05` recommends n={planned}.\n")
    print("| n | true drop | driftloop false promotion | point gate false promotion "
          "| driftloop flags a regression | point gate flags a regression |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, drop, r in rows:
        mark = " (plan)" if n == planned else ""
        what = "false trigger" if drop == 0 else "power"
        print(f"| {n}{mark} | {drop:.2f} | {r['dl_promote']:.3f} | {r['pt_promote']:.3f} "
              f"| {r['dl_flag']:.3f} ({what}) | {r['pt_flag']:.3f} ({what}) |")
    print(f"\n{time.monotonic() - t0:.0f} s. Goal (false alarms <= alpha at every n; power >= 0.80 for a 5-point "
          f"drop at n={planned}): {'met' if not failures else 'NOT met: ' + '; '.join(failures)}")
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
