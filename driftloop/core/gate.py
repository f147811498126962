"""The promotion gate: promote the challenger only when paired tests on the same items say it is
better on every target task and no worse than its margin on every canary and bias task.

Pure: per-item results, suite roles and the policy go in, a `Decision` with typed findings comes
out (reasons rendered by `driftloop.core.findings`). Each task's `SampleResults.spec` says what
better means (a direction or a target) and its margin, in the metric's own units.

    >>> d = gate({"golden": [chall]}, {"golden": [champ]}, {"golden": "target"}, cfg.policy)
    >>> d.action, d.findings[0].kind
    (<Action.PROMOTE: 'promote'>, 'gain')

Every target task needs a one-sided significant improvement above `min_improvement` (exact
McNemar for 0/1 outcomes, paired bootstrap otherwise; a lower-is-better metric improves by
falling, a target metric by moving closer to its target); every canary and bias task a
one-sided non-inferiority test against its margin. All must pass (an intersection-union
test), so each is tested at alpha and the false-promotion rate is still at most alpha.
"""

from __future__ import annotations

from typing import Any

from driftloop.core import stats
from driftloop.core.config import PolicyConfig
from driftloop.core.findings import render_all
from driftloop.core.types import Action, Decision, Finding, FindingKind, MetricResult, MetricSpec, SampleResults


def _paired(ch: SampleResults, cl: SampleResults) -> tuple[list[float], list[float]]:
    shared = sorted(set(ch.items) & set(cl.items))
    return [ch.items[i] for i in shared], [cl.items[i] for i in shared]


def _is_binary(values: list[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def _in_unit_interval(spec: MetricSpec, values: list[float]) -> bool:
    lo, hi = spec.bounds
    if lo is not None and hi is not None:
        return 0.0 <= lo and hi <= 1.0
    return all(0.0 <= v <= 1.0 for v in values)


def _compare(a0: list[float], a1: list[float], spec: MetricSpec, conf: float) -> stats.PairedResult:
    """Paired comparison in improvement units: positive means the challenger is better."""
    if spec.target is not None:
        return stats.paired_target(a0, a1, spec.target, confidence=conf)
    if spec.direction == "lower":
        # Falling is improving: compare the mirrored outcomes (1 - x keeps 0/1 outcomes 0/1).
        flip = (lambda v: 1.0 - v) if _is_binary(a0 + a1) else (lambda v: -v)
        a0, a1 = [flip(v) for v in a0], [flip(v) for v in a1]
    if _is_binary(a0 + a1):
        return stats.paired_binary(a0, a1, confidence=conf)
    return stats.paired_bootstrap(a0, a1, confidence=conf)


def _margin(
    spec: MetricSpec, role: str, champion_score: float, values: list[float], policy: PolicyConfig
) -> float | None:
    """The non-inferiority margin in the metric's units; None where none applies (then no verdict)."""
    scale = abs(champion_score - spec.target) if spec.target is not None else abs(champion_score)
    if spec.relative_margin is not None:
        return spec.relative_margin * scale
    if spec.margin is not None:
        return spec.margin
    if role in policy.relative_margins:
        return policy.relative_margins[role] * scale
    # A role's absolute margin is on the scale of a proportion: it never applies to other scales.
    if role in policy.margins and _in_unit_interval(spec, values):
        return policy.margins[role]
    return None


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
    id. Each task's `SampleResults.spec` says what better means (direction or
    target) and its margin. A target task must show a one-sided significant
    improvement above `policy.min_improvement`; a canary or bias task must be
    non-inferior within its margin, in the metric's units (the task's own
    margin, else the role's relative margin, else the role's absolute margin for
    metrics in [0, 1]; a metric on another scale without a margin gets no
    verdict). A task with fewer than `policy.min_n` shared items gets
    `insufficient_data`. Anything without a verdict blocks promotion.
    `feedback` is quoted as context only.
    """
    findings: list[Finding] = []
    evidence: list[MetricResult] = []
    seen_target = False
    conf = 1 - 2 * policy.alpha  # the two-sided interval whose bound is each one-sided test
    for suite, results in challenger.items():
        role = roles.get(suite, "target")
        seen_target |= role == "target"
        champ_by_task = {s.task: s for s in champion.get(suite, [])}
        for cl in results:
            ch = champ_by_task.get(cl.task)
            spec = cl.spec
            base: dict[str, Any] = {
                "metric": f"{suite}/{cl.task}/{cl.metric}",
                "role": role,
                "segment": {"suite": suite, "role": role},
                "direction": spec.direction,
                "target": spec.target,
                "alpha": policy.alpha,
            }
            if ch is None:
                findings.append(Finding(kind="no_comparison", **base))
                evidence.append(_diff_metric(cl, suite, role, None, 0, "champion has no results"))
                continue
            a0, a1 = _paired(ch, cl)
            n = len(a0)
            if n < policy.min_n:
                findings.append(Finding(kind="insufficient_data", n=n, detail={"min_n": policy.min_n}, **base))
                evidence.append(_diff_metric(cl, suite, role, None, n, f"insufficient data (n={n} < {policy.min_n})"))
                continue
            res = _compare(a0, a1, spec, conf)
            champ_mean, chall_mean = sum(a0) / n, sum(a1) / n
            figures: dict[str, Any] = {
                "estimate": res.diff,
                "ci_low": res.ci_low,
                "ci_high": res.ci_high,
                "n": n,
                "reference": champ_mean,
                "challenger": chall_mean,
                "unpaired": len(ch.items) + len(cl.items) - 2 * n,
                "detail": {"confidence": conf},
            }
            kind: FindingKind
            if role == "target":
                threshold, kind = policy.min_improvement, "gain"
            else:
                margin = _margin(spec, role, champ_mean, a0 + a1, policy)
                if margin is None:
                    findings.append(
                        Finding(
                            kind="no_margin",
                            n=n,
                            detail={"suite": suite, "config_key": _task_key(suite, cl.task)},
                            **base,
                        )
                    )
                    evidence.append(_diff_metric(cl, suite, role, res, n, "no margin"))
                    continue
                threshold, kind = margin, "non_inferiority"
            p = res.p_greater(threshold if kind == "gain" else -threshold)
            f = Finding(
                kind=kind,
                threshold=threshold,
                p_value=p,
                p_adjusted=p,
                passed=p < policy.alpha,
                method=res.p_method(threshold if kind == "gain" else -threshold),
                **figures,
                **base,
            )
            findings.append(f)
            evidence.append(
                _diff_metric(
                    cl,
                    suite,
                    role,
                    res,
                    n,
                    f"{f.method} one-sided p={p:.4g}",
                    -threshold if kind == "non_inferiority" else threshold,
                    f.passed,
                )
            )
    if not seen_target:
        findings.append(Finding(kind="no_target_suite"))
    ok = all(f.passed for f in findings)
    if feedback:
        evidence.extend(feedback)
    return Decision(
        action=Action.PROMOTE if ok else Action.REJECT,
        findings=findings,
        reasons=render_all(findings),
        evidence=evidence,
        policy_version=policy.version,
    )


def _task_key(suite: str, task: str) -> str:
    return f"benchmark.suites.{suite}.tasks[{task}]"


def _diff_metric(
    cl: SampleResults,
    suite: str,
    role: str,
    res: stats.PairedResult | None,
    n: int,
    note: str,
    threshold: float | None = None,
    passed: bool | None = None,
) -> MetricResult:
    """The gate's figure for one task as a MetricResult (logged to MLflow as `<task>/<metric>_diff`):
    the improvement of the challenger in the metric's units, positive is better."""
    return MetricResult(
        name=f"{cl.task}/{cl.metric}_diff",
        value=res.diff if res else None,
        ci_low=res.ci_low if res else None,
        ci_high=res.ci_high if res else None,
        n=n,
        source="benchmark",
        segment={"suite": suite, "role": role},
        threshold=threshold,
        passed=passed,
        note=note,
    )
