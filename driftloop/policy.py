"""Pure decision functions: whether to retrain (`decide`) and whether to promote (`gate`).

No I/O: results, policy and state go in, a `Decision` with reasons comes out.
Every reason is a sentence with the numbers in it (estimate, interval,
threshold, p-value, n), so an alert or an auditor can quote it as it is.

    >>> d = decide(current, reference, drift, cfg.policy, state={})
    >>> d.action, d.reasons[0]
    (<Action.RETRAIN: 'retrain'>, 'thumbs_up_rate in topic=billing is 0.12 [0.08, 0.17] (n=290), below the floor 0.70, p<0.001 (Holm) ...')

Statistics (see `driftloop.stats`):
- a floor breach is a one-sided test that the true value is below the floor
  (exact binomial for rates, normal from the bootstrap interval for means);
- a drop is a one-sided z-test that reference - current exceeds `max_drop`
  (absolute) or `relative_drop` x the champion's baseline value (relative);
- every breach test of one window, over metrics x segments x kinds, forms one
  family corrected with Holm: any single breach triggers, so the family-wise
  false-trigger rate is at most alpha;
- promotion needs, on every target task, a one-sided significant paired gain
  above `min_improvement` (exact one-sided McNemar for 0/1 outcomes, paired
  bootstrap otherwise), and on every canary and bias task a one-sided
  non-inferiority test against its margin. All must pass (an
  intersection-union test), so each is tested at alpha with no multiplicity
  correction and the false-promotion rate is still at most alpha.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

from scipy import stats as _st

from driftloop import stats
from driftloop.config import PolicyConfig
from driftloop.types import Action, Decision, MetricResult, SampleResults

RATE_METRICS = {"thumbs_up_rate", "correction_rate"}


def _fmt_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _seg(m: MetricResult) -> str:
    return " in " + ",".join(f"{k}={v}" for k, v in sorted(m.segment.items())) if m.segment else " overall"


def _ci(m: MetricResult) -> str:
    if m.ci_low is None or m.ci_high is None:
        return ""
    return f" [{m.ci_low:.2f}, {m.ci_high:.2f}]"


def _p_below(m: MetricResult, floor: float) -> float:
    """One-sided p-value that the true value of `m` is below `floor` (lower is worse)."""
    assert m.value is not None
    if not m.higher_is_better:
        # A rate where higher is worse (corrections): below-floor means above-ceiling.
        return _p_below(m.model_copy(update={"value": 1 - m.value, "higher_is_better": True,
                                             "ci_low": None, "ci_high": None}), 1 - floor)
    if m.name in RATE_METRICS or (m.ci_low is None and 0 <= m.value <= 1):
        return stats.one_sided_p_below(int(round(m.value * m.n)), m.n, floor)
    se = _se(m)
    if se == 0:
        return 0.0 if m.value < floor else 1.0
    return float(_st.norm.cdf((m.value - floor) / se))


def _se(m: MetricResult) -> float:
    # The evaluators' intervals are 95% (Wilson or percentile bootstrap): half-width / 1.96 is the standard error.
    if m.ci_low is not None and m.ci_high is not None:
        return (m.ci_high - m.ci_low) / (2 * 1.959964)
    v = m.value or 0.0
    return math.sqrt(max(v * (1 - v), 0.0) / max(m.n, 1))


def _p_drop(ref: MetricResult, cur: MetricResult, max_drop: float, sign: float = 1.0) -> float:
    """One-sided p-value that the true drop sign * (ref - cur) exceeds max_drop (sign -1: lower is better).

    An unpaired normal test: the windows hold different events. Where the two
    overlap (a golden set re-scored), their positive correlation makes it
    conservative.
    """
    assert ref.value is not None and cur.value is not None
    se = math.sqrt(_se(ref) ** 2 + _se(cur) ** 2)
    drop = sign * (ref.value - cur.value)
    if se == 0:
        return 0.0 if drop > max_drop else 1.0
    return float(_st.norm.sf((drop - max_drop) / se))


def _breach_tests(current: list[MetricResult], reference: list[MetricResult], baseline: list[MetricResult],
                  policy: PolicyConfig) -> tuple[list[dict[str, Any]], list[MetricResult], list[str]]:
    """Every breach hypothesis of one window (metrics x segments x floor/drop/relative drop), with its
    raw p-value; plus the metrics too small to judge (passed=None) and a note on each."""
    tests: list[dict[str, Any]] = []
    skipped: list[MetricResult] = []
    notes: list[str] = []
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
        if m.value is None or m.n < policy.min_n:
            note = f"insufficient data (n={m.n} < {policy.min_n}), no verdict"
            notes.append(f"{m.name}{_seg(m)}: {note}")
            skipped.append(m.model_copy(update={"passed": None, "note": note}))
            continue
        if floor is not None:
            tests.append({"kind": "floor", "metric": m, "threshold": floor, "p": _p_below(m, floor)})
        for kind, ref, limit in (("drop", ref_by_label.get(m.label()), max_drop),
                                 ("relative drop", base_by_label.get(m.label()), rel)):
            if limit is None or ref is None or ref.value is None:
                continue
            if ref.n < policy.min_n:
                against = "reference" if kind == "drop" else "baseline"
                notes.append(f"{m.name}{_seg(m)}: {kind} not tested, the {against} has insufficient data "
                             f"(n={ref.n} < {policy.min_n})")
                continue
            # A relative limit is a fraction of the baseline value: 0.1 of 0.85 tolerates a 0.085 drop.
            threshold = limit if kind == "drop" else limit * abs(ref.value)
            sign = 1.0 if m.higher_is_better else -1.0
            tests.append({"kind": kind, "metric": m, "ref": ref, "threshold": threshold, "limit": limit,
                          "p": _p_drop(ref, m, threshold, sign)})
    return tests, skipped, notes


def decide(
    current: list[MetricResult],
    reference: list[MetricResult],
    drift: list[MetricResult],
    policy: PolicyConfig,
    state: dict[str, Any] | None = None,
    now: datetime | None = None,
    benchmark: list[MetricResult] | None = None,
    baseline: list[MetricResult] | None = None,
) -> Decision:
    """Whether to retrain, from the current window's quality metrics and the champion's benchmark scores.

    Breach hypotheses: a floor (`policy.floors`), a drop from the reference
    window (`policy.max_drop`) and a drop from the champion's `baseline`
    relative to its value (`policy.relative_drop`), for every metric and
    segment of `current` + `benchmark`. They form one family, corrected with
    Holm. Metrics under `policy.min_n` get "insufficient data" (passed=None).
    `state` may hold `breaches` (bools, one per earlier window, oldest first),
    `last_retrain_at` (ISO time) and `retrains` (ISO times of recent retrains)
    for debounce, cooldown and budget.
    """
    state = state or {}
    now = now or datetime.now(timezone.utc)
    tests, skipped, notes = _breach_tests(current + list(benchmark or []), reference, list(baseline or []), policy)
    adjusted = stats.holm([t["p"] for t in tests]) if tests else []
    reasons: list[str] = []
    evidence: list[MetricResult] = []
    # Worst first, so the most severe breach leads the reasons.
    for t, p_adj in sorted(zip(tests, adjusted), key=lambda x: (x[0]["metric"].value, x[0]["kind"])):
        m: MetricResult = t["metric"]
        breached = p_adj < policy.alpha
        if t["kind"] == "floor":
            ev = m.model_copy(update={"threshold": t["threshold"], "passed": not breached,
                                      "note": f"floor, one-sided p={t['p']:.4g}, Holm p={p_adj:.4g}"})
            if breached:
                reasons.append(
                    f"{m.name}{_seg(m)} is {m.value:.2f}{_ci(m)} (n={m.n}), below the floor "
                    f"{t['threshold']:.2f}, {_fmt_p(p_adj)} (Holm, {len(tests)} tests)")
        else:
            ref: MetricResult = t["ref"]
            drop = ref.value - m.value
            what = "reference" if t["kind"] == "drop" else "champion's baseline"
            limit = (f"{t['threshold']:.2f}" if t["kind"] == "drop"
                     else f"{t['threshold']:.3f} ({t['limit']:.0%} of {ref.value:.2f})")
            ev = m.model_copy(update={"threshold": t["threshold"], "passed": not breached,
                                      "note": f"{t['kind']} from {what} {ref.value:.3f}, Holm p={p_adj:.4g}"})
            if breached:
                reasons.append(
                    f"{m.name}{_seg(m)} fell from the {what} {ref.value:.2f}{_ci(ref)} to {m.value:.2f}{_ci(m)}, "
                    f"drop {drop:.2f} > {limit}, {_fmt_p(p_adj)} (Holm, {len(tests)} tests, n={ref.n}->{m.n})")
        evidence.append(ev)
    evidence.extend(skipped)
    drifted = [d for d in drift if d.name == "drifted_share" and d.passed is False]
    if drifted:
        reasons.append(f"data drift: {drifted[0].value:.0%} of monitored columns drifted "
                       f"(threshold {drifted[0].threshold:.0%}); reported, not a retrain trigger on its own")
        evidence.extend(drifted)
    breach_now = any(e.passed is False for e in evidence if e.source in ("quality", "benchmark"))
    window = (list(state.get("breaches", [])) + [breach_now])[-policy.debounce_n:]
    hits = sum(window)
    pv = policy.version
    if not breach_now:
        why = ["no quality metric is below its floor or dropped beyond its margin at "
               f"alpha={policy.alpha} (Holm, {len(tests)} tests)"]
        return Decision(action=Action.ALERT if drifted else Action.NONE, reasons=why + reasons + notes,
                        evidence=evidence, policy_version=pv)
    if hits < policy.debounce_m:
        return Decision(action=Action.ALERT, evidence=evidence, policy_version=pv, reasons=reasons + [
            f"debounce: {hits} of the last {len(window)} windows breached, {policy.debounce_m} needed"])
    last = state.get("last_retrain_at")
    if last and policy.cooldown_hours > 0:
        since = now - datetime.fromisoformat(last)
        if since < timedelta(hours=policy.cooldown_hours):
            return Decision(action=Action.ALERT, evidence=evidence, policy_version=pv, reasons=reasons + [
                f"cooldown: last retrain {since.total_seconds() / 3600:.1f} h ago, "
                f"{policy.cooldown_hours:g} h required"])
    recent = [t for t in state.get("retrains", []) if now - datetime.fromisoformat(t) < timedelta(days=1)]
    if len(recent) >= policy.max_retrains_per_day:
        return Decision(action=Action.ALERT, evidence=evidence, policy_version=pv, reasons=reasons + [
            f"budget: {len(recent)} retrains in the last 24 h, at most {policy.max_retrains_per_day} allowed"])
    return Decision(action=Action.RETRAIN, reasons=reasons + notes, evidence=evidence, policy_version=pv)


def _paired(ch: SampleResults, cl: SampleResults) -> tuple[list[float], list[float]]:
    shared = sorted(set(ch.items) & set(cl.items))
    return [ch.items[i] for i in shared], [cl.items[i] for i in shared]


def _is_binary(values: list[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def gate(
    challenger: dict[str, list[SampleResults]],
    champion: dict[str, list[SampleResults]],
    roles: dict[str, str],
    policy: PolicyConfig,
    feedback: list[MetricResult] | None = None,
) -> Decision:
    """Promote or reject the challenger, from per-item results on the same suites.

    `challenger` and `champion` map suite name -> that suite's SampleResults;
    `roles` maps suite name -> "target" | "canary" | "bias". Items are paired by
    id. A target must show a one-sided significant gain above
    `policy.min_improvement`; a canary or bias task must be non-inferior within
    its margin (absolute, or relative to the champion's score). A task with
    fewer than `policy.min_n` shared items gets the verdict "insufficient data"
    (passed=None), which blocks promotion. `feedback` is quoted as context only.
    """
    reasons: list[str] = []
    evidence: list[MetricResult] = []
    ok, seen_target = True, False
    for suite, results in challenger.items():
        role = roles.get(suite, "target")
        seen_target |= role == "target"
        champ_by_task = {s.task: s for s in champion.get(suite, [])}
        for cl in results:
            label = f"{suite}/{cl.task}"
            ch = champ_by_task.get(cl.task)
            if ch is None:
                ok = False
                reasons.append(f"{label}: the champion has no results on this task; cannot compare")
                evidence.append(_insufficient(cl, suite, role, 0, "champion has no results"))
                continue
            a0, a1 = _paired(ch, cl)
            n = len(a0)
            if n < policy.min_n:
                ok = False
                reasons.append(f"{label}: insufficient data (n={n} < {policy.min_n}) shared items, no verdict; "
                               "blocks promotion")
                evidence.append(_insufficient(cl, suite, role, n, f"insufficient data (n={n} < {policy.min_n})"))
                continue
            # 1-2*alpha two-sided interval = the one-sided (1-alpha) bound each test uses.
            conf = 1 - 2 * policy.alpha
            res = (stats.paired_binary(a0, a1, confidence=conf) if _is_binary(a0 + a1)
                   else stats.paired_bootstrap(a0, a1, confidence=conf))
            champ_mean, chall_mean = sum(a0) / n, sum(a1) / n
            unpaired = len(ch.items) + len(cl.items) - 2 * n
            head = (f"{label} {cl.metric}: challenger {chall_mean:.3f} vs champion {champ_mean:.3f} on {n} "
                    f"shared items" + (f" ({unpaired} unpaired items ignored)" if unpaired else "")
                    + f", diff {res.diff:+.3f} [{res.ci_low:+.3f}, {res.ci_high:+.3f}] ({conf:.0%} CI)")
            if role == "target":
                threshold = policy.min_improvement
                p = res.p_greater(threshold)
                verdict = p < policy.alpha
                reasons.append(f"{head}; one-sided {res.p_method(threshold)} {_fmt_p(p)} for a gain > {threshold:.3f} "
                               f"at alpha={policy.alpha}: {'pass' if verdict else 'fail (no significant gain)'}")
            else:
                margin = policy.margin_for(role, champ_mean)
                threshold = -margin
                p = res.p_greater(threshold)
                verdict = p < policy.alpha
                reasons.append(f"{head}; non-inferiority margin {margin:.3f}, one-sided {res.p_method(threshold)} "
                               f"{_fmt_p(p)} at alpha={policy.alpha}: "
                               f"{'pass' if verdict else _ni_failure(res.diff, margin)}")
            ok &= verdict
            evidence.append(MetricResult(
                name=f"{cl.task}/{cl.metric}_diff", value=res.diff, ci_low=res.ci_low, ci_high=res.ci_high,
                n=n, source="benchmark", segment={"suite": suite, "role": role}, threshold=threshold,
                passed=verdict, note=f"{res.p_method(threshold)} one-sided p={p:.4g}"))
    if not seen_target:
        ok = False
        reasons.append("no target suite was evaluated; promotion needs evidence of improvement")
    if feedback:
        evidence.extend(feedback)
    return Decision(action=Action.PROMOTE if ok else Action.REJECT, reasons=reasons, evidence=evidence,
                    policy_version=policy.version)


def _ni_failure(diff: float, margin: float) -> str:
    if diff < -margin:
        return "fail (worse by more than the margin)"
    return "fail (a loss beyond the margin cannot be ruled out)"


def _insufficient(cl: SampleResults, suite: str, role: str, n: int, note: str) -> MetricResult:
    return MetricResult(name=f"{cl.task}/{cl.metric}_diff", value=None, n=n, source="benchmark",
                        segment={"suite": suite, "role": role}, passed=None, note=note)
