"""Pure decision functions: whether to retrain (`decide`); whether to promote is `driftloop.core.gate`.

No I/O: results, policy and the loop's memory go in, a `Decision` comes out. A
decision carries typed `Finding`s (kind, metric, segment, estimate, interval,
threshold or margin, raw and adjusted p, n, direction or target); its reasons
are rendered from them (`driftloop.core.findings`) and never parsed back.

    >>> d = decide(current, reference, drift, cfg.policy, LoopMemory())
    >>> d.action, d.findings[0].kind, d.reasons[0]
    (<Action.RETRAIN: 'retrain'>, 'floor', 'thumbs_up_rate in topic=billing is 0.12 [0.08, 0.17] (n=290), below the floor 0.70, p<0.001 (Holm, 3 tests)')

Nothing assumes that higher is better: every metric carries a direction
(higher or lower is better) or a target (its ideal value; the distance to it
must not grow), and margins are in the metric's own units.

Statistics (see `driftloop.core.stats`):
- a floor breach is a one-sided test that the true value is below the floor
  (exact binomial for rates, normal from the bootstrap interval for means, and
  from the PPI++ interval for a trusted judge's estimate, `driftloop.core.judging`);
- a drop is a one-sided z-test that reference - current exceeds `max_drop`
  (absolute) or `relative_drop` x the champion's baseline value (relative);
- every breach test of one window, over metrics x segments x kinds, forms one
  family corrected with Holm: any single breach triggers, so the family-wise
  false-trigger rate is at most alpha;
- the promotion gate and its statistics are in `driftloop.core.gate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scipy import stats as _st

from driftloop.core import stats
from driftloop.core.config import PolicyConfig
from driftloop.core.findings import render_all
from driftloop.core.judging import JudgedWindow, apply
from driftloop.core.loopstate import LoopMemory
from driftloop.core.types import Action, Decision, Finding, FindingKind, MetricResult, MetricSpec

RATE_METRICS = {"thumbs_up_rate", "correction_rate"}
# Decide's breach tests, the kinds whose breach can trigger a retrain.
BREACH_KINDS = ("floor", "drop", "relative_drop")


def _spec(m: MetricResult) -> MetricSpec:
    return MetricSpec(direction=m.direction, target=m.target)


def _p_worse_than(m: MetricResult, floor: float) -> float:
    """One-sided p-value that the true value of `m` is worse than `floor`.

    Higher is better: worse means below the floor; lower is better: above it (a ceiling);
    a target metric: farther from the target than `floor` (normal, from the interval).
    """
    assert m.value is not None
    if m.target is not None:
        se = _se(m)
        dist = abs(m.value - m.target)
        if se == 0:
            return 0.0 if dist > floor else 1.0
        return float(_st.norm.sf((dist - floor) / se))
    if m.direction == "lower":
        if _is_rate(m):
            # A rate where higher is worse (corrections): above the ceiling is below 1 - ceiling.
            mirrored = m.model_copy(
                update={"value": 1 - m.value, "direction": "higher", "ci_low": None, "ci_high": None}
            )
            return _p_worse_than(mirrored, 1 - floor)
        se = _se(m)
        if se == 0:
            return 0.0 if m.value > floor else 1.0
        return float(_st.norm.sf((m.value - floor) / se))
    if _is_rate(m):
        return stats.one_sided_p_below(int(round(m.value * m.n)), m.n, floor)
    se = _se(m)
    if se == 0:
        return 0.0 if m.value < floor else 1.0
    return float(_st.norm.cdf((m.value - floor) / se))


def _is_rate(m: MetricResult) -> bool:
    if m.estimator == "ppi":  # a prediction-powered estimate: its interval is normal, no count of successes
        return False
    return m.name in RATE_METRICS or (m.ci_low is None and m.value is not None and 0 <= m.value <= 1)


def _se(m: MetricResult) -> float:
    # The evaluators' intervals are 95% (Wilson or percentile bootstrap): half-width / 1.96 is the standard error.
    if m.ci_low is not None and m.ci_high is not None:
        return (m.ci_high - m.ci_low) / (2 * 1.959964)
    v = m.value or 0.0
    return math.sqrt(max(v * (1 - v), 0.0) / max(m.n, 1))


def _worsening(ref: MetricResult, cur: MetricResult) -> float:
    """How much worse `cur` is than `ref`, in the metric's units (positive is worse)."""
    assert ref.value is not None and cur.value is not None
    spec = _spec(cur)
    return spec.loss(cur.value) - spec.loss(ref.value)


def _p_drop(ref: MetricResult, cur: MetricResult, tolerated: float) -> float:
    """One-sided p-value that the true worsening from `ref` to `cur` exceeds `tolerated`.

    An unpaired normal test: the windows hold different events. Where the two
    overlap (a golden set re-scored), their positive correlation makes it
    conservative.
    """
    se = math.sqrt(_se(ref) ** 2 + _se(cur) ** 2)
    worse = _worsening(ref, cur)
    if se == 0:
        return 0.0 if worse > tolerated else 1.0
    return float(_st.norm.sf((worse - tolerated) / se))


@dataclass
class _Tests:
    """Every breach hypothesis of one window, plus the findings without a verdict."""

    tests: list[tuple[Finding, MetricResult]] = field(default_factory=list)
    quiet: list[tuple[Finding, MetricResult | None]] = field(default_factory=list)


def _breach_tests(
    current: list[MetricResult], reference: list[MetricResult], baseline: list[MetricResult], policy: PolicyConfig
) -> _Tests:
    out = _Tests()
    ref_by_label = {m.label(): m for m in reference}
    base_by_label = {m.label(): m for m in baseline}
    for m in current:
        if m.source not in ("quality", "benchmark"):
            continue
        floor = policy.floors.get(m.name)
        max_drop = policy.max_drop.get(m.name)
        rel = policy.relative_drop.get(m.name)
        if floor is None and max_drop is None and rel is None:
            continue
        common: dict[str, Any] = {
            "metric": m.name,
            "segment": m.segment,
            "direction": m.direction,
            "target": m.target,
            "n": m.n,
        }
        if m.value is None or m.n < policy.min_n:
            f = Finding(kind="insufficient_data", detail={"min_n": policy.min_n}, **common)
            out.quiet.append((f, m.model_copy(update={"passed": None, "note": _insufficient_note(m, policy)})))
            continue
        est: dict[str, Any] = {
            "estimate": m.value,
            "ci_low": m.ci_low,
            "ci_high": m.ci_high,
            "estimator": m.estimator,
            "n_judged": m.n_judged,
        }
        if floor is not None:
            out.tests.append(
                (
                    Finding(
                        kind="floor",
                        threshold=floor,
                        p_value=_p_worse_than(m, floor),
                        method="exact binomial" if _is_rate(m) and m.target is None else "normal z",
                        **est,
                        **common,
                    ),
                    m,
                )
            )
        drops: tuple[tuple[FindingKind, MetricResult | None, float | None], ...] = (
            ("drop", ref_by_label.get(m.label()), max_drop),
            ("relative_drop", base_by_label.get(m.label()), rel),
        )
        for kind, ref, limit in drops:
            if limit is None or ref is None or ref.value is None:
                continue
            if ref.n < policy.min_n:
                against = "reference" if kind == "drop" else "baseline"
                out.quiet.append(
                    (
                        Finding(
                            kind="insufficient_data",
                            n_reference=ref.n,
                            detail={"min_n": policy.min_n, "against": against, "test": kind.replace("_", " ")},
                            **common,
                        ),
                        None,
                    )
                )
                continue
            # A relative limit is a fraction of the baseline value (of its distance to a target):
            # 0.1 of 0.85 tolerates a 0.085 drop.
            scale = abs(ref.value - m.target) if m.target is not None else abs(ref.value)
            tolerated = limit if kind == "drop" else limit * scale
            detail: dict[str, Any] = {
                "worsening": _worsening(ref, m),
                "reference_ci_low": ref.ci_low,
                "reference_ci_high": ref.ci_high,
            }
            if kind == "relative_drop":
                detail["fraction"] = limit
            out.tests.append(
                (
                    Finding(
                        kind=kind,
                        reference=ref.value,
                        n_reference=ref.n,
                        reference_estimator=ref.estimator,
                        reference_n_judged=ref.n_judged,
                        threshold=tolerated,
                        p_value=_p_drop(ref, m, tolerated),
                        method="normal z, unpaired",
                        detail=detail,
                        **est,
                        **common,
                    ),
                    m,
                )
            )
    return out


def _insufficient_note(m: MetricResult, policy: PolicyConfig) -> str:
    return f"insufficient data (n={m.n} < {policy.min_n}), no verdict"


def breach_key(f: Finding) -> str:
    """`kind:metric[segment]`: what identifies a breach across windows (for `LoopMemory.answered`)."""
    seg = ",".join(f"{k}={v}" for k, v in sorted(f.segment.items()))
    return f"{f.kind}:{f.metric}[{seg}]"


def decide(
    current: list[MetricResult],
    reference: list[MetricResult],
    drift: list[MetricResult],
    policy: PolicyConfig,
    state: LoopMemory | dict[str, Any] | None = None,
    now: datetime | None = None,
    benchmark: list[MetricResult] | None = None,
    baseline: list[MetricResult] | None = None,
    fresh_events: int | None = None,
    judged: JudgedWindow | None = None,
    reference_judged: JudgedWindow | None = None,
) -> Decision:
    """Whether to retrain, from the current window's quality metrics and the champion's benchmark scores.

    Breach hypotheses: a floor (`policy.floors`; a ceiling for lower-is-better metrics, the
    largest tolerated distance for target metrics), a worsening from the reference window
    (`policy.max_drop`) and from the champion's `baseline` relative to its value
    (`policy.relative_drop`), for every metric and segment of `current` + `benchmark`, each
    in the metric's own direction. They form one family, corrected with Holm. Metrics under
    `policy.min_n` get an `insufficient_data` finding (no verdict).

    `state` is the loop's memory: breach history (debounce), retrain times (cooldown,
    budget) and `answered`, the breaches a retrain already acted on; those hold back a
    trigger until `fresh_events` (events of the current window newer than that retrain's
    window) reach `policy.min_n`.

    `judged`: what calibrated judges add to the current window. A trusted judge's
    prediction-powered estimate replaces the human-only figure of the same metric and
    segment (`driftloop.core.judging.apply`); every judge's finding (used or not, and why)
    joins the reasons. `reference_judged`: the same for the reference window (trust measured
    on the reference's own labels), so that a drop compares an estimate with an estimate.
    """
    memory = state if isinstance(state, LoopMemory) else LoopMemory.load(state)
    now = now or datetime.now(UTC)
    current = apply(current, judged)
    reference = apply(reference, reference_judged)
    found = _breach_tests(current + list(benchmark or []), reference, list(baseline or []), policy)
    adjusted = stats.holm([f.p_value or 1.0 for f, _ in found.tests]) if found.tests else []
    findings: list[Finding] = []
    evidence: list[MetricResult] = []
    ranked = sorted(
        zip(found.tests, adjusted), key=lambda x: (-(_spec(x[0][1]).loss(x[0][1].value or 0.0)), x[0][0].kind)
    )
    for (f, m), p_adj in ranked:
        breached = p_adj < policy.alpha
        f = f.model_copy(
            update={"p_adjusted": p_adj, "tests": len(found.tests), "alpha": policy.alpha, "passed": not breached}
        )
        findings.append(f)
        evidence.append(
            m.model_copy(
                update={
                    "threshold": f.threshold,
                    "passed": not breached,
                    "note": f"{f.kind.replace('_', ' ')}, one-sided p={f.p_value:.4g}, Holm p={p_adj:.4g}",
                }
            )
        )
    breaches = [f for f in findings if f.breached]
    quiet = [f for f, _ in found.quiet] + (judged.findings if judged is not None else [])
    evidence.extend(m for _, m in found.quiet if m is not None)
    drifted = [d for d in drift if d.name == "drifted_share" and d.passed is False]
    drift_findings = [
        Finding(kind="drift", metric="drifted_share", estimate=d.value, threshold=d.threshold, n=d.n, passed=False)
        for d in drifted[:1]
    ]
    evidence.extend(drifted[:1])
    pv = policy.version

    passing = [f for f in findings if not f.breached]

    def done(action: Action, fs: list[Finding], head: list[str] | None = None) -> Decision:
        # Every test is a finding; the reasons speak of what breached, had no verdict or held a trigger back.
        return Decision(
            action=action,
            findings=fs + passing,
            reasons=(head or []) + render_all(fs),
            evidence=evidence,
            policy_version=pv,
        )

    if not breaches:
        why = [
            "no quality metric is below its floor or dropped beyond its margin at "
            f"alpha={policy.alpha} (Holm, {len(found.tests)} tests)"
        ]
        return done(Action.ALERT if drift_findings else Action.NONE, drift_findings + quiet, why)
    shown = breaches + drift_findings
    if memory.answered is not None:
        keys = {breach_key(f) for f in breaches}
        fresh = fresh_events if fresh_events is not None else 0
        if keys <= set(memory.answered.breach_keys) and fresh < policy.min_n:
            return done(
                Action.ALERT,
                [
                    Finding(
                        kind="answered",
                        n=fresh,
                        detail={
                            "at": memory.answered.at.strftime("%Y-%m-%d %H:%M UTC"),
                            "outcome": memory.answered.outcome,
                            "fresh": fresh,
                            "needed": policy.min_n,
                        },
                    )
                ]
                + shown,
            )
    window = (memory.breaches + [True])[-policy.debounce_n :]
    if sum(window) < policy.debounce_m:
        return done(
            Action.ALERT,
            [
                Finding(
                    kind="debounce", detail={"hits": sum(window), "windows": len(window), "needed": policy.debounce_m}
                )
            ]
            + shown,
        )
    last = memory.last_retrain_at
    if last is not None and policy.cooldown_hours > 0:
        hours = (now - last).total_seconds() / 3600
        if hours < policy.cooldown_hours:
            return done(
                Action.ALERT,
                [Finding(kind="cooldown", detail={"hours_since": hours, "cooldown_hours": policy.cooldown_hours})]
                + shown,
            )
    recent = memory.recent_retrains(now)
    if recent >= policy.max_retrains_per_day:
        return done(
            Action.ALERT,
            [Finding(kind="budget", detail={"recent": recent, "max": policy.max_retrains_per_day})] + shown,
        )
    hours, max_hours = memory.recent_training_hours(now), policy.max_training_hours_per_day
    if max_hours is not None and hours >= max_hours:
        return done(
            Action.ALERT, [Finding(kind="budget", detail={"hours": round(hours, 4), "max_hours": max_hours})] + shown
        )
    return done(Action.RETRAIN, shown + quiet)


def nothing_to_train(corrections: int, needed: int, policy: PolicyConfig) -> Decision:
    """A real regression that the training data cannot answer (thumbs but no corrections, say): an
    alert with its finding, never a failure."""
    finding = Finding(kind="nothing_to_train", n=corrections, detail={"corrections": corrections, "needed": needed})
    return Decision(
        action=Action.ALERT, findings=[finding], reasons=render_all([finding]), policy_version=policy.version
    )
