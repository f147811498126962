"""Gate power: driftloop's paired tests against a point-threshold gate, on the same draws.

A seeded simulation of a golden set scored by two models (champion and
challenger, or the serving model before and after a drift). Each draw gives
per-item 0/1 outcomes with a chosen share of discordant items and a chosen true
drop. On every draw it runs, side by side:

- driftloop: the real `driftloop.core.gate.gate` (one-sided exact McNemar) for
  promotion, and the paired one-sided exact McNemar that `driftloop plan`
  sizes (`stats.paired_binary(...).p_greater`) for regression detection;
- a point gate of the MLflow MetricThreshold kind: promote when
  `challenger >= champion - threshold`, flag a regression otherwise.

With no true difference it reports the false-promotion and false-trigger
rates; with true drops of 2, 5 and 10 points, the detection power.

A second table covers the bias suites' non-inferiority test, which the gate
applies in each metric's own direction and units:

- a lower-is-better metric on its own scale (a likelihood difference near 17,
  per-item difference sd 3, margin 1.0);
- a target metric (a stereotype-choice rate whose ideal is 0.5; champion at
  0.55, 20% of items discordant, margin 0.03 on the distance to 0.5).

For each, at the n that `driftloop plan --suite` gives and at half and twice
it: the false-promotion rate when the challenger is worse by exactly the
margin (the null's boundary; must be at most alpha, within Monte-Carlo error)
and the power when the two are equally good (at least 0.8 at the planned n),
beside a point gate that promotes when the challenger's score is within the
margin of the champion's. Run:

    .venv/bin/python benchmarks/gate_power.py            # markdown tables, about 7 min on 2 busy cores
    .venv/bin/python benchmarks/gate_power.py --reps 300 # quicker, noisier
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from driftloop.core import stats
from driftloop.core.config import PolicyConfig
from driftloop.core.gate import gate
from driftloop.core.types import Action, MetricSpec, SampleResults

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
    return {
        "dl_promote": dl_promote / reps,
        "dl_flag": dl_flag / reps,
        "pt_promote": pt_promote / reps,
        "pt_flag": pt_flag / reps,
    }


# The bias cases: (label, spec, the margin's sd of the per-item difference, the champion's draw).
LD_MEAN, LD_SD, LD_DIFF_SD, LD_MARGIN = 17.0, 4.0, 3.0, 1.0
ST_RATE, ST_DISCORDANT, ST_MARGIN = 0.55, 0.20, 0.03


def draw_lower(rng: np.random.Generator, n: int, worse: float) -> tuple[np.ndarray, np.ndarray]:
    """A likelihood difference per item (lower is better); the challenger is `worse` higher on average."""
    champ = rng.normal(LD_MEAN, LD_SD, n)
    return champ, champ + worse + rng.normal(0.0, LD_DIFF_SD, n)


def draw_target(rng: np.random.Generator, n: int, worse: float) -> tuple[np.ndarray, np.ndarray]:
    """0/1 stereotype choices (target 0.5); the challenger's rate is `worse` farther from 0.5 than
    the champion's (same side), with `ST_DISCORDANT` of items answered differently."""
    b, c = (ST_DISCORDANT - worse) / 2, (ST_DISCORDANT + worse) / 2  # champion-only 1, challenger-only 1
    both = ST_RATE - b
    u = rng.random(n)
    champ = (u < both + b).astype(float)
    chall = ((u < both) | ((u >= both + b) & (u < both + b + c))).astype(float)
    return champ, chall


BIAS_CASES = {
    "lower is better (likelihood difference)": (
        MetricSpec(direction="lower", margin=LD_MARGIN),
        LD_DIFF_SD,
        LD_MARGIN,
        draw_lower,
    ),
    "target 0.5 (stereotype-choice rate)": (
        MetricSpec(target=0.5, margin=ST_MARGIN),
        ST_DISCORDANT**0.5,
        ST_MARGIN,
        draw_target,
    ),
}
# A target suite the challenger always passes, so the bias task alone decides the verdict.
_WIN = (
    {"golden": [SampleResults(task="golden", model="b", items={f"g{k}": 1.0 for k in range(60)})]},
    {"golden": [SampleResults(task="golden", model="a", items={f"g{k}": float(k < 30) for k in range(60)})]},
)


def _point_gate(spec: MetricSpec, champ: np.ndarray, chall: np.ndarray, margin: float) -> bool:
    return spec.loss(float(chall.mean())) <= spec.loss(float(champ.mean())) + margin


def _bias(values: np.ndarray, model: str, spec: MetricSpec) -> SampleResults:
    return SampleResults(task="bias", model=model, items={f"i{k}": float(x) for k, x in enumerate(values)}, spec=spec)


def simulate_bias(case: str, n: int, worse: float, reps: int, policy: PolicyConfig, seed: int) -> dict[str, float]:
    spec, _, margin, draw_fn = BIAS_CASES[case]
    rng = np.random.default_rng([seed, n, int(round(worse * 1000)), len(case)])
    dl = pt = 0
    for _ in range(reps):
        champ, chall = draw_fn(rng, n, worse)
        d = gate(
            {**_WIN[0], "bias": [_bias(chall, "b", spec)]},
            {**_WIN[1], "bias": [_bias(champ, "a", spec)]},
            {"golden": "target", "bias": "bias"},
            policy,
        )
        dl += d.action == Action.PROMOTE
        pt += _point_gate(spec, champ, chall, margin)
    return {"dl_promote": dl / reps, "pt_promote": pt / reps}


def bias_table(reps: int, policy: PolicyConfig, seed: int) -> list[str]:
    """Print the bias suites' table; return the goals missed."""
    failures = []
    mc = 2 * (policy.alpha * (1 - policy.alpha) / reps) ** 0.5  # two Monte-Carlo standard errors at alpha
    print(
        f"\nBias suites: non-inferiority within the margin; {reps} seeded draws per cell ({3 * reps} at the "
        f"planned n), Monte-Carlo standard error about {mc / 2:.3f} at alpha.\n"
    )
    print("| bias metric | n | challenger | driftloop promotes | point gate promotes |")
    print("|---|---:|---|---:|---:|")
    for case, (_, sd, margin, _) in BIAS_CASES.items():
        planned = stats.ni_sample_size(margin, sd, alpha=policy.alpha, power=0.8)
        for n in sorted({max(policy.min_n, planned // 2), planned, 2 * planned}):
            for worse, what in ((margin, "worse by the margin (false promotion)"), (0.0, "equally good (power)")):
                # The planned n's power is the goal: three times the draws there, for a tighter estimate.
                r = simulate_bias(case, n, worse, reps * (3 if n == planned else 1), policy, seed)
                mark = " (plan)" if n == planned else ""
                print(f"| {case} | {n}{mark} | {what} | {r['dl_promote']:.3f} | {r['pt_promote']:.3f} |")
                if worse > 0 and r["dl_promote"] > policy.alpha + mc:
                    failures.append(f"{case} n={n}: false promotion {r['dl_promote']:.3f} > alpha")
                power_se = (0.8 * 0.2 / (3 * reps)) ** 0.5
                if worse == 0 and n == planned and r["dl_promote"] < 0.8 - 2 * power_se:
                    failures.append(f"{case} n={n}: power {r['dl_promote']:.2f} < 0.80")
    return failures


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
    print(
        f"Gate power: {args.reps} seeded draws per cell, champion accuracy {ACCURACY:.2f}, discordant share "
        f"2 x drop + 0.05 (0.15 with no difference), alpha={args.alpha}, point-gate threshold {args.threshold}; "
        f"`driftloop plan --drop 0.05` recommends n={planned}.\n"
    )
    print(
        "| n | true drop | driftloop false promotion | point gate false promotion "
        "| driftloop flags a regression | point gate flags a regression |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for n, drop, r in rows:
        mark = " (plan)" if n == planned else ""
        what = "false trigger" if drop == 0 else "power"
        print(
            f"| {n}{mark} | {drop:.2f} | {r['dl_promote']:.3f} | {r['pt_promote']:.3f} "
            f"| {r['dl_flag']:.3f} ({what}) | {r['pt_flag']:.3f} ({what}) |"
        )
    failures += bias_table(max(200, args.reps // 3), policy, args.seed)
    print(
        f"\n{time.monotonic() - t0:.0f} s. Goals (false alarms <= alpha at every n; power >= 0.80 at the planned "
        "n; for the bias margins, whose null is tested at its boundary, each within two Monte-Carlo standard "
        f"errors): "
        f"{'met' if not failures else 'NOT met: ' + '; '.join(failures)}"
    )
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
