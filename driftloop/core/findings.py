"""Reasons rendered from findings: one sentence with the numbers for each piece of typed evidence.

Decisions carry `Finding`s; the sentences an alert, a table or an auditor reads are
rendered here, in one place, and never parsed back.

    >>> render(Finding(kind="floor", metric="thumbs_up_rate", segment={"topic": "billing"},
    ...                estimate=0.12, ci_low=0.08, ci_high=0.17, n=290, threshold=0.7,
    ...                p_value=1e-9, p_adjusted=3e-9, tests=3, passed=False))
    'thumbs_up_rate in topic=billing is 0.12 [0.08, 0.17] (n=290), below the floor 0.70, p<0.001 (Holm, 3 tests)'
"""

from __future__ import annotations

from driftloop.core.types import Finding


def fmt_p(p: float | None) -> str:
    if p is None:
        return "p=n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def where(f: Finding) -> str:
    """` in topic=billing`, or ` overall`."""
    return " in " + ",".join(f"{k}={v}" for k, v in sorted(f.segment.items())) if f.segment else " overall"


def _ci(lo: float | None, hi: float | None, digits: int = 2, sign: bool = False) -> str:
    if lo is None or hi is None:
        return ""
    s = "+" if sign else ""
    return f" [{lo:{s}.{digits}f}, {hi:{s}.{digits}f}]"


def _judged(f: Finding) -> str:
    """Where a figure is prediction-powered, say so and on how many events: the reasons name their estimator."""
    parts = []
    if f.estimator == "ppi":
        parts.append(f"current: {f.n} rated + {f.n_judged} judged")
    if f.reference_estimator == "ppi":
        parts.append(
            f"{'reference' if f.kind == 'drop' else 'baseline'}: {f.n_reference} rated + {f.reference_n_judged} judged"
        )
    return f"; PPI++ ({', '.join(parts)})" if parts else ""


def _floor(f: Finding) -> str:
    word = {"higher": "below the floor", "lower": "above the ceiling"}[f.direction]
    if f.target is not None:
        return (
            f"{f.metric}{where(f)} is {f.estimate:.2f}{_ci(f.ci_low, f.ci_high)} (n={f.n}), farther than "
            f"{f.threshold:.2f} from its target {f.target:g}, {fmt_p(f.p_adjusted)} (Holm, {f.tests} tests)"
            f"{_judged(f)}"
        )
    return (
        f"{f.metric}{where(f)} is {f.estimate:.2f}{_ci(f.ci_low, f.ci_high)} (n={f.n}), {word} "
        f"{f.threshold:.2f}, {fmt_p(f.p_adjusted)} (Holm, {f.tests} tests){_judged(f)}"
    )


def _drop(f: Finding) -> str:
    what = "reference" if f.kind == "drop" else "champion's baseline"
    ref = f.reference if f.reference is not None else float("nan")
    worse = f.detail.get("worsening", 0.0)
    verb = {"higher": "fell", "lower": "rose"}[f.direction] if f.target is None else "moved away from its target"
    limit = (
        f"{f.threshold:.2f}"
        if f.kind == "drop"
        else (f"{f.threshold:.3f} ({f.detail.get('fraction', 0):.0%} of {abs(ref):.2f})")
    )
    ref_ci = _ci(f.detail.get("reference_ci_low"), f.detail.get("reference_ci_high"))
    return (
        f"{f.metric}{where(f)} {verb} from the {what} {ref:.2f}{ref_ci} to {f.estimate:.2f}"
        f"{_ci(f.ci_low, f.ci_high)}, {'drop' if f.target is None else 'change'} {worse:.2f} > {limit}, "
        f"{fmt_p(f.p_adjusted)} (Holm, {f.tests} tests, n={f.n_reference}->{f.n}){_judged(f)}"
    )


def _gate_head(f: Finding) -> str:
    conf = f.detail.get("confidence", 0.9)
    unpaired = f" ({f.unpaired} unpaired items ignored)" if f.unpaired else ""
    what = f"{f.metric}" + ("" if f.direction == "higher" and f.target is None else f" ({_kind(f)})")
    return (
        f"{what}: challenger {f.challenger:.3f} vs champion {f.reference:.3f} on {f.n} shared items{unpaired}, "
        f"{'improvement' if f.direction != 'higher' or f.target is not None else 'diff'} {f.estimate:+.3f}"
        f"{_ci(f.ci_low, f.ci_high, 3, True)} ({conf:.0%} CI)"
    )


def _kind(f: Finding) -> str:
    return f"target {f.target:g}, distance to it" if f.target is not None else f"{f.direction} is better"


def _gate(f: Finding) -> str:
    head = _gate_head(f)
    if f.kind == "gain":
        verdict = "pass" if f.passed else "fail (no significant gain)"
        return (
            f"{head}; one-sided {f.method} {fmt_p(f.p_value)} for a gain > {f.threshold:.3f} "
            f"at alpha={f.alpha}: {verdict}"
        )
    if f.passed:
        verdict = "pass"
    elif f.estimate is not None and f.threshold is not None and f.estimate < -f.threshold:
        verdict = "fail (worse by more than the margin)"
    else:
        verdict = "fail (a loss beyond the margin cannot be ruled out)"
    return (
        f"{head}; non-inferiority margin {f.threshold:.3f}, one-sided {f.method} {fmt_p(f.p_value)} "
        f"at alpha={f.alpha}: {verdict}"
    )


def render(f: Finding) -> str:
    """The sentence for one finding."""
    d = f.detail
    if f.kind == "floor":
        return _floor(f)
    if f.kind in ("drop", "relative_drop"):
        return _drop(f)
    if f.kind in ("gain", "non_inferiority"):
        return _gate(f)
    if f.kind == "insufficient_data":
        if f.role:
            return f"{f.metric}: insufficient data (n={f.n} < {d['min_n']}) shared items, no verdict; blocks promotion"
        if d.get("against"):
            return (
                f"{f.metric}{where(f)}: {d['test']} not tested, the {d['against']} has insufficient data "
                f"(n={f.n_reference} < {d['min_n']})"
            )
        return f"{f.metric}{where(f)}: insufficient data (n={f.n} < {d['min_n']}), no verdict"
    if f.kind == "no_comparison":
        return f"{f.metric}: the champion has no results on this task; cannot compare"
    if f.kind == "no_margin":
        return (
            f"{f.metric} ({_kind(f)}): no non-inferiority margin for a metric outside [0, 1]; set "
            f"{d['config_key']}.margin in the metric's units (`driftloop plan --suite {d['suite']}` sizes it); "
            "blocks promotion"
        )
    if f.kind == "no_target_suite":
        return "no target suite was evaluated; promotion needs evidence of improvement"
    if f.kind == "drift":
        return (
            f"data drift: {f.estimate:.0%} of monitored columns drifted (threshold {f.threshold:.0%}); "
            "reported, not a retrain trigger on its own"
        )
    if f.kind == "debounce":
        return f"debounce: {d['hits']} of the last {d['windows']} windows breached, {d['needed']} needed"
    if f.kind == "cooldown":
        return f"cooldown: last retrain {d['hours_since']:.1f} h ago, {d['cooldown_hours']:g} h required"
    if f.kind == "budget" and "max_hours" in d:
        return f"budget: {d['hours']:.2f} training hours in the last 24 h, at most {d['max_hours']:g} allowed"
    if f.kind == "budget":
        return f"budget: {d['recent']} retrains in the last 24 h, at most {d['max']} allowed"
    if f.kind == "answered":
        return (
            f"already answered: the retrain at {d['at']} ({d['outcome']}) acted on these breaches; "
            f"{d['fresh']} events arrived since, {d['needed']} needed before they may trigger again"
        )
    if f.kind == "nothing_to_train":
        return (
            f"regression; nothing to train on: {d['corrections']} corrections in the training pool, need {d['needed']}"
        )
    if f.kind in ("judge_trusted", "judge_untrusted"):
        return _judge(f)
    raise ValueError(f"no renderer for finding kind {f.kind!r}")


def _judge(f: Finding) -> str:
    d = f.detail
    kappa = "kappa undefined" if f.estimate is None else f"kappa {f.estimate:.2f}{_ci(f.ci_low, f.ci_high)}"
    head = f"judge {d['judge']} vs human {d['label']}: {kappa} on {f.n} events with both"
    (both_good, human_only), (judge_only, both_bad) = d.get("confusion") or ((0, 0), (0, 0))
    if f.n:  # what kappa sums up: how often they agree, and how often each calls a response good
        head += (
            f" (agreeing on {(both_good + both_bad) / f.n:.0%}; good by the judge {(both_good + judge_only) / f.n:.0%},"
            f" by the humans {(both_good + human_only) / f.n:.0%})"
        )
    if f.kind == "judge_trusted":
        return f"{head}; trusted (lower bound >= {d['min_kappa']:.2f}, n >= {d['min_labels']}), its estimates used"
    return f"{head}; not used ({d['reason']}), its figures shown only"


def render_all(findings: list[Finding]) -> list[str]:
    return [render(f) for f in findings]
