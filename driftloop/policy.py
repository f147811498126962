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
- a drop is a one-sided z-test that reference - current exceeds `max_drop`;
- all breach tests of one window form a family, corrected with Holm;
- promotion needs a significant paired improvement on every target suite
  (exact McNemar, Holm across target tasks) and non-inferiority on canary and
  bias suites (the lower bound of the (1-2*alpha) interval of the paired
  difference above -margin). Non-inferiority is an intersection-union test:
  each must pass on its own, so it needs no multiplicity correction.
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
    if m.ci_low is not None and m.ci_high is not None:
        return (m.ci_high - m.ci_low) / (2 * 1.959964)
    v = m.value or 0.0
    return math.sqrt(max(v * (1 - v), 0.0) / max(m.n, 1))


def _p_drop(ref: MetricResult, cur: MetricResult, max_drop: float) -> float:
    """One-sided p-value that ref - cur exceeds max_drop (higher is better)."""
    assert ref.value is not None and cur.value is not None
    se = math.sqrt(_se(ref) ** 2 + _se(cur) ** 2)
    drop = ref.value - cur.value
    if se == 0:
        return 0.0 if drop > max_drop else 1.0
    return float(_st.norm.sf((drop - max_drop) / se))


def _breach_tests(current: list[MetricResult], reference: list[MetricResult],
                  policy: PolicyConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """Every breach hypothesis of one window, with its raw p-value; plus notes on skipped metrics."""
    tests: list[dict[str, Any]] = []
    notes: list[str] = []
    ref_by_label = {m.label(): m for m in reference}
    for m in current:
        if m.source != "quality":
            continue
        floor = policy.floors.get(m.name)
        max_drop = policy.max_drop.get(m.name)
        if floor is None and max_drop is None:
            continue
        if m.value is None or m.n < policy.min_n:
            notes.append(f"{m.name}{_seg(m)}: insufficient data (n={m.n} < {policy.min_n}), no verdict")
            continue
        if floor is not None:
            tests.append({"kind": "floor", "metric": m, "threshold": floor, "p": _p_below(m, floor)})
        ref = ref_by_label.get(m.label())
        if max_drop is not None and ref is not None and ref.value is not None and ref.n >= policy.min_n:
            tests.append({"kind": "drop", "metric": m, "ref": ref, "threshold": max_drop,
                          "p": _p_drop(ref, m, max_drop)})
    return tests, notes


def decide(
    current: list[MetricResult],
    reference: list[MetricResult],
    drift: list[MetricResult],
    policy: PolicyConfig,
    state: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Decision:
    """Whether to retrain, from the current and reference windows' quality metrics.

    `state` may hold `breaches` (list of bools, one per earlier window, oldest
    first), `last_retrain_at` (ISO time) and `retrains` (ISO times of recent
    retrains). The returned decision's evidence marks each breached metric with
    passed=False; the caller appends "breached" to the window history.
    """
    state = state or {}
    now = now or datetime.now(timezone.utc)
    tests, notes = _breach_tests(current, reference, policy)
    adjusted = stats.holm([t["p"] for t in tests]) if tests else []
    reasons: list[str] = []
    evidence: list[MetricResult] = []
    # Worst first, so the most severe breach leads the reasons.
    for t, p_adj in sorted(zip(tests, adjusted), key=lambda x: (x[0]["metric"].value, x[0]["kind"])):
        m: MetricResult = t["metric"]
        breached = p_adj < policy.alpha
        if t["kind"] == "floor":
            ev = m.model_copy(update={"threshold": t["threshold"], "passed": not breached})
            if breached:
                reasons.append(
                    f"{m.name}{_seg(m)} is {m.value:.2f}{_ci(m)} (n={m.n}), below the floor "
                    f"{t['threshold']:.2f}, {_fmt_p(p_adj)} (Holm, {len(tests)} tests)")
        else:
            ref: MetricResult = t["ref"]
            drop = ref.value - m.value
            ev = m.model_copy(update={"threshold": t["threshold"], "passed": not breached,
                                      "note": f"drop from reference {ref.value:.3f}"})
            if breached:
                reasons.append(
                    f"{m.name}{_seg(m)} fell {ref.value:.2f}{_ci(ref)} -> {m.value:.2f}{_ci(m)}, "
                    f"drop {drop:.2f} > {t['threshold']:.2f}, {_fmt_p(p_adj)} (Holm, n={ref.n}->{m.n})")
        evidence.append(ev)
    drifted = [d for d in drift if d.name == "drifted_share" and d.passed is False]
    if drifted:
        reasons.append(f"data drift: {drifted[0].value:.0%} of monitored columns drifted "
                       f"(threshold {drifted[0].threshold:.0%}); reported, not a retrain trigger on its own")
        evidence.extend(drifted)
    breach_now = any(e.passed is False for e in evidence if e.source == "quality")
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
    id; a task with fewer than `policy.min_n` shared items gives "insufficient
    data", which blocks promotion. `feedback` (quality MetricResults with
    passed=False for breaches) is quoted as context only.
    """
    rows: list[dict[str, Any]] = []
    for suite, results in challenger.items():
        role = roles.get(suite, "target")
        champ_by_task = {s.task: s for s in champion.get(suite, [])}
        for cl in results:
            ch = champ_by_task.get(cl.task)
            if ch is None:
                rows.append({"suite": suite, "role": role, "task": cl.task, "missing": True})
                continue
            a0, a1 = _paired(ch, cl)
            if _is_binary(a0 + a1):
                conf = 1 - 2 * policy.alpha if role != "target" else 1 - policy.alpha
                res = stats.paired_binary(a0, a1, confidence=conf)
            else:
                res = stats.paired_bootstrap(a0, a1, confidence=1 - 2 * policy.alpha)
            rows.append({"suite": suite, "role": role, "task": cl.task, "metric": cl.metric, "res": res,
                         "n": len(a0), "champ": sum(a0) / len(a0) if a0 else None,
                         "chall": sum(a1) / len(a1) if a1 else None})
    targets = [r for r in rows if r["role"] == "target" and "res" in r and r["n"] >= policy.min_n]
    adj = dict(zip([id(r) for r in targets], stats.holm([r["res"].p_value for r in targets])))
    reasons: list[str] = []
    evidence: list[MetricResult] = []
    ok = bool(rows)
    improved_any = False
    for r in rows:
        label = f"{r['suite']}/{r['task']}"
        if r.get("missing"):
            ok = False
            reasons.append(f"{label}: the champion has no results on this task; cannot compare")
            continue
        res, n = r["res"], r["n"]
        head = (f"{label} {r['metric']}: challenger {r['chall']:.2f} vs champion {r['champ']:.2f} on {n} "
                f"shared items, diff {res.diff:+.2f} [{res.ci_low:+.2f}, {res.ci_high:+.2f}]"
                if n else f"{label}: no shared items")
        if n < policy.min_n:
            ok = False
            verdict = None
            reasons.append(f"{head}: insufficient data (n={n} < {policy.min_n}), no verdict; blocks promotion")
        elif r["role"] == "target":
            p = adj[id(r)]
            verdict = p < policy.alpha and res.diff > policy.min_improvement
            improved_any |= verdict
            ok &= verdict
            reasons.append(f"{head}, {res.test} {_fmt_p(p)} (Holm), needs a significant gain "
                           f"> {policy.min_improvement:.2f}: {'pass' if verdict else 'fail'}")
        else:
            margin = policy.margins.get(r["role"], 0.0)
            verdict = res.ci_low > -margin
            ok &= verdict
            reasons.append(f"{head}, non-inferiority margin {margin:.2f} at {1 - policy.alpha:.0%} one-sided: "
                           f"{'pass' if verdict else 'fail (worse by more than the margin)'}")
        evidence.append(MetricResult(
            name=f"{r['task']}/{r['metric']}_diff", value=res.diff, ci_low=res.ci_low, ci_high=res.ci_high,
            n=n, source="benchmark", segment={"suite": r["suite"], "role": r["role"]},
            threshold=policy.min_improvement if r["role"] == "target" else -policy.margins.get(r["role"], 0.0),
            passed=verdict, note=f"{res.test} p={res.p_value:.4g}"))
    if not any(r["role"] == "target" for r in rows):
        ok = False
        reasons.append("no target suite was evaluated; promotion needs evidence of improvement")
    action = Action.PROMOTE if ok and improved_any else Action.REJECT
    if feedback:
        evidence.extend(feedback)
    return Decision(action=action, reasons=reasons, evidence=evidence, policy_version=policy.version)
