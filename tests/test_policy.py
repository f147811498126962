"""Table-driven tests of the pure decision functions and the statistics under them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from driftloop.core import stats
from driftloop.core.config import PolicyConfig
from driftloop.core.gate import gate
from driftloop.core.policy import decide
from driftloop.core.types import Action, MetricResult, SampleResults

NOW = datetime(2026, 11, 20, tzinfo=UTC)


def rate(value: float, n: int, segment: dict | None = None, name: str = "thumbs_up_rate") -> MetricResult:
    v, lo, hi = stats.wilson(round(value * n), n)
    return MetricResult(name=name, value=v, ci_low=lo, ci_high=hi, n=n, source="quality", segment=segment or {})


POLICY = PolicyConfig(floors={"thumbs_up_rate": 0.7}, max_drop={"thumbs_up_rate": 0.1}, min_n=30)


@pytest.mark.parametrize(
    "case, current, reference, action, fragment",
    [
        ("clear regression", [rate(0.55, 800)], [rate(0.85, 2000)], Action.RETRAIN, "below the floor 0.70"),
        ("noise only", [rate(0.84, 600)], [rate(0.85, 2000)], Action.NONE, "no quality metric"),
        ("noise near the floor", [rate(0.69, 100)], [rate(0.72, 2000)], Action.NONE, "no quality metric"),
        (
            "one segment only",
            [rate(0.80, 900), rate(0.15, 300, {"topic": "billing"}), rate(0.88, 600, {"topic": "account"})],
            [rate(0.86, 2000), rate(0.87, 700, {"topic": "account"})],
            Action.RETRAIN,
            "in topic=billing",
        ),
        ("insufficient data", [rate(0.10, 12, {"topic": "billing"})], [], Action.NONE, "insufficient data (n=12 < 30)"),
        (
            "drop beyond margin above the floor",
            [rate(0.72, 3000)],
            [rate(0.90, 3000)],
            Action.RETRAIN,
            "drop 0.18 > 0.10",
        ),
    ],
)
def test_decide_table(case, current, reference, action, fragment):
    d = decide(current, reference, [], POLICY, state={}, now=NOW)
    assert d.action == action, (case, d.reasons)
    assert any(fragment in r for r in d.reasons), (case, d.reasons)


def test_decide_reasons_carry_the_numbers():
    d = decide([rate(0.15, 300, {"topic": "billing"})], [], [], POLICY, now=NOW)
    r = d.reasons[0]
    assert r.startswith("thumbs_up_rate in topic=billing is 0.15 [")
    assert "(n=300)" in r and "p<0.001" in r and "Holm" in r
    assert d.evidence[0].passed is False and d.evidence[0].threshold == 0.7


@pytest.mark.parametrize(
    "state, policy_kw, action, fragment",
    [
        ({"breaches": []}, {"debounce_m": 2, "debounce_n": 3}, Action.ALERT, "debounce: 1 of the last 1"),
        ({"breaches": [False, True]}, {"debounce_m": 2, "debounce_n": 3}, Action.RETRAIN, "below the floor"),
        (
            {"breaches": [True, False, False]},
            {"debounce_m": 2, "debounce_n": 3},
            Action.ALERT,
            "debounce: 1 of the last 3",
        ),
        (
            {"last_retrain_at": (NOW - timedelta(hours=2)).isoformat()},
            {"cooldown_hours": 6},
            Action.ALERT,
            "cooldown: last retrain 2.0 h ago",
        ),
        (
            {"last_retrain_at": (NOW - timedelta(hours=7)).isoformat()},
            {"cooldown_hours": 6},
            Action.RETRAIN,
            "below the floor",
        ),
        (
            {"retrains": [(NOW - timedelta(hours=h)).isoformat() for h in (1, 5)]},
            {"max_retrains_per_day": 2},
            Action.ALERT,
            "budget: 2 retrains",
        ),
        (
            {"retrains": [(NOW - timedelta(hours=h)).isoformat() for h in (1, 30)]},
            {"max_retrains_per_day": 2},
            Action.RETRAIN,
            "below the floor",
        ),
        (  # 1.5 h + 0.75 h trained within the day: the hours budget of 2 is spent
            {
                "training": [
                    {"at": (NOW - timedelta(hours=h)).isoformat(), "seconds": s} for h, s in ((2, 5400), (20, 2700))
                ]
            },
            {"max_training_hours_per_day": 2},
            Action.ALERT,
            "budget: 2.25 training hours in the last 24 h, at most 2 allowed",
        ),
        (  # the same hours, one of them 30 h ago: 1.5 h count, under the budget
            {
                "training": [
                    {"at": (NOW - timedelta(hours=h)).isoformat(), "seconds": s} for h, s in ((2, 5400), (30, 2700))
                ]
            },
            {"max_training_hours_per_day": 2},
            Action.RETRAIN,
            "below the floor",
        ),
        (  # no hours budget set: hours never stop a retrain
            {"training": [{"at": (NOW - timedelta(hours=1)).isoformat(), "seconds": 86000}]},
            {},
            Action.RETRAIN,
            "below the floor",
        ),
    ],
)
def test_decide_debounce_cooldown_budget(state, policy_kw, action, fragment):
    policy = POLICY.model_copy(update=policy_kw)
    d = decide([rate(0.4, 500)], [], [], policy, state=state, now=NOW)
    assert d.action == action, d.reasons
    assert any(fragment in r for r in d.reasons), d.reasons


def samples(task: str, outcomes: list[int], prefix: str = "i") -> SampleResults:
    return SampleResults(task=task, model="m", items={f"{prefix}{k}": float(v) for k, v in enumerate(outcomes)})


def paired(n: int, p0: float, p1: float, seed: int, task: str) -> tuple[SampleResults, SampleResults]:
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    return samples(task, (u < p0).astype(int).tolist()), samples(task, (u < p1).astype(int).tolist())


ROLES = {"golden": "target", "canary": "canary", "bias": "bias"}


@pytest.mark.parametrize(
    "case, golden, canary, action, fragment",
    [
        (
            "clear win, canary equal",
            paired(120, 0.4, 0.9, 1, "g"),
            paired(120, 0.95, 0.95, 2, "c"),
            Action.PROMOTE,
            "pass",
        ),
        ("no real gain", paired(120, 0.6, 0.6, 3, "g"), paired(120, 0.95, 0.95, 4, "c"), Action.REJECT, "fail"),
        (
            "gain but canary worse by more than the margin",
            paired(120, 0.4, 0.9, 5, "g"),
            paired(200, 0.95, 0.70, 6, "c"),
            Action.REJECT,
            "worse by more than the margin",
        ),
        (
            "gain but canary too small to rule out a loss",
            paired(120, 0.4, 0.9, 9, "g"),
            paired(40, 0.9, 0.85, 10, "c"),
            Action.REJECT,
            "a loss beyond the margin cannot be ruled out",
        ),
        (
            "too few golden items",
            paired(12, 0.2, 1.0, 7, "g"),
            paired(120, 0.95, 0.95, 8, "c"),
            Action.REJECT,
            "insufficient data (n=12 < 30)",
        ),
    ],
)
def test_gate_table(case, golden, canary, action, fragment):
    champ = {"golden": [golden[0]], "canary": [canary[0]]}
    chall = {"golden": [golden[1]], "canary": [canary[1]]}
    d = gate(chall, champ, ROLES, POLICY)
    assert d.action == action, (case, d.reasons)
    assert any(fragment in r for r in d.reasons), (case, d.reasons)


def test_gate_rejects_a_worse_bias_score():
    g0, g1 = paired(200, 0.4, 0.9, 11, "g")
    b0, b1 = paired(300, 0.9, 0.75, 12, "bbq")
    d = gate({"golden": [g1], "bias": [b1]}, {"golden": [g0], "bias": [b0]}, ROLES, POLICY)
    assert d.action == Action.REJECT
    assert any(r.startswith("bias/bbq") and "fail" in r for r in d.reasons)


def test_gate_pairs_items_by_id_not_position():
    champ = samples("g", [0] * 40 + [1] * 40)
    # Same outcomes per id, listed in another order: no difference at all.
    chall = SampleResults(task="g", model="m", items=dict(reversed(list(champ.items.items()))))
    d = gate({"golden": [chall]}, {"golden": [champ]}, ROLES, POLICY)
    assert d.action == Action.REJECT
    assert d.evidence[0].value == 0.0


def test_gate_false_promotion_rate_is_at_most_alpha():
    # No true difference: 400 seeded draws of 200 items at 70% accuracy, 20% discordance.
    promoted = 0
    for seed in range(400):
        rng = np.random.default_rng(seed)
        base = rng.random(200) < 0.7
        flip = rng.random(200) < 0.1
        chall = np.where(flip, ~base, base)
        flip2 = rng.random(200) < 0.1
        champ = np.where(flip2, ~base, base)
        d = gate(
            {"golden": [samples("g", chall.astype(int).tolist())]},
            {"golden": [samples("g", champ.astype(int).tolist())]},
            ROLES,
            POLICY,
        )
        promoted += d.action == Action.PROMOTE
    assert promoted / 400 <= POLICY.alpha


@pytest.mark.parametrize("p, n", [(0.5, 40), (0.9, 200), (0.05, 1000)])
def test_wilson_covers_at_nominal_rate(p, n):
    rng = np.random.default_rng(0)
    hits = 0
    for x in rng.binomial(n, p, size=1000):
        _, lo, hi = stats.wilson(int(x), n)
        hits += lo <= p <= hi
    assert 0.93 <= hits / 1000 <= 0.975


def test_holm_matches_hand_computation():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_mcnemar_exact_small_n():
    assert stats.mcnemar_exact(0, 6).p_value == pytest.approx(2 * 0.5**6)
    assert stats.mcnemar_exact(3, 3).p_value == 1.0


def test_paired_sample_size_gives_power():
    n = stats.paired_sample_size(0.05, 0.15, alpha=0.05, power=0.8)
    assert stats.paired_power(n, 0.05, 0.15) >= 0.8 > stats.paired_power(n - 60, 0.05, 0.15)
    rng = np.random.default_rng(1)
    detected = 0
    for _ in range(400):
        # discordant share 0.15, split so that the new model loses 0.05 net: b=0.10, c=0.05
        u = rng.random(n)
        b = int(np.sum(u < 0.10))
        c = int(np.sum((u >= 0.10) & (u < 0.15)))
        # The regression test: the old model (as "challenger") beats the new one, one-sided.
        detected += stats.PairedResult(0, 0, 0, 1, n, b=c, c=b, test="mcnemar-exact").p_greater(0) < 0.05
    assert detected / 400 >= 0.75


def test_gate_superiority_is_one_sided():
    # 11 discordant pairs, 9 won: two-sided exact p = 0.065, one-sided p = 0.033.
    champ = samples("g", [1] * 2 + [0] * 9 + [1] * 40)
    chall = samples("g", [0] * 2 + [1] * 9 + [1] * 40)
    assert stats.mcnemar_exact(2, 9).p_value > 0.05
    d = gate({"golden": [chall]}, {"golden": [champ]}, ROLES, POLICY)
    assert d.action == Action.PROMOTE, d.reasons
    assert "one-sided exact McNemar p=0.033" in d.reasons[0]
    # ...and the same gain does not pass a required improvement of 0.10 (diff is 7/51 = 0.137, not enough evidence).
    d = gate({"golden": [chall]}, {"golden": [champ]}, ROLES, POLICY.model_copy(update={"min_improvement": 0.10}))
    assert d.action == Action.REJECT and "gain > 0.100" in d.reasons[0]


@pytest.mark.parametrize(
    "margins, relative, action",
    [
        ({"canary": 0.05}, {}, Action.REJECT),  # 0.05 absolute: a 6-point loss is beyond it
        ({"canary": 0.05}, {"canary": 0.20}, Action.PROMOTE),  # 20% of 0.95 = 0.19: within it
    ],
)
def test_gate_canary_margin_absolute_or_relative_to_the_champion(margins, relative, action):
    g0, g1 = paired(200, 0.4, 0.9, 21, "g")
    c0, c1 = paired(1000, 0.95, 0.89, 22, "c")
    policy = POLICY.model_copy(update={"margins": margins, "relative_margins": relative})
    d = gate({"golden": [g1], "canary": [c1]}, {"golden": [g0], "canary": [c0]}, ROLES, policy)
    assert d.action == action, d.reasons
    canary = next(e for e in d.evidence if e.segment.get("role") == "canary")
    assert canary.threshold == pytest.approx(-0.05 if not relative else -0.20 * 0.95, abs=0.01)


def test_gate_insufficient_data_is_a_verdict_of_its_own():
    g0, g1 = paired(12, 0.2, 1.0, 7, "g")
    d = gate({"golden": [g1], "canary": [samples("c", [1] * 5)]}, {"golden": [g0]}, ROLES, POLICY)
    assert d.action == Action.REJECT
    assert [(e.name, e.passed, e.value) for e in d.evidence] == [("g/acc_diff", None, None), ("c/acc_diff", None, None)]
    assert "champion has no results" in d.reasons[1]


def test_decide_insufficient_data_is_marked_on_the_metric():
    d = decide([rate(0.10, 12, {"topic": "billing"}), rate(0.85, 500)], [], [], POLICY, now=NOW)
    small = next(e for e in d.evidence if e.segment)
    assert d.action == Action.NONE and small.passed is None and "insufficient data (n=12 < 30)" in small.note


def test_decide_holm_spans_metrics_and_segments():
    # Ten segments each just under the floor: every raw one-sided p < 0.05, none after Holm over the family.
    segs = [rate(0.66, 400, {"topic": f"t{i}"}) for i in range(10)]
    raw = [stats.one_sided_p_below(264, 400, 0.7) for _ in segs]
    assert max(raw) < 0.05
    d = decide(segs, [], [], POLICY, now=NOW)
    assert d.action == Action.NONE and "Holm, 10 tests" in d.reasons[0]
    # The same dip in one segment alone is a breach.
    assert decide(segs[:1], [], [], POLICY, now=NOW).action == Action.RETRAIN


def bench(value: float, n: int, name: str = "driftloop_golden/acc") -> MetricResult:
    v, lo, hi = stats.wilson(round(value * n), n)
    return MetricResult(name=name, value=v, ci_low=lo, ci_high=hi, n=n, source="benchmark")


@pytest.mark.parametrize(
    "case, now_value, base, action, fragment",
    [
        ("fell 12% of its baseline", 0.70, bench(0.80, 800), Action.RETRAIN, "drop 0.10 > 0.040 (5% of 0.80)"),
        ("fell within noise", 0.79, bench(0.80, 800), Action.NONE, "no quality metric"),
        ("baseline too small", 0.50, bench(0.80, 20), Action.NONE, "baseline has insufficient data (n=20 < 30)"),
    ],
)
def test_decide_relative_drop_from_the_champions_baseline(case, now_value, base, action, fragment):
    policy = POLICY.model_copy(update={"floors": {}, "max_drop": {}, "relative_drop": {"driftloop_golden/acc": 0.05}})
    d = decide([], [], [], policy, now=NOW, benchmark=[bench(now_value, 800)], baseline=[base])
    assert d.action == action, (case, d.reasons)
    assert any(fragment in r for r in d.reasons), (case, d.reasons)


def test_decide_relative_drop_on_a_lower_is_better_metric():
    policy = POLICY.model_copy(update={"floors": {}, "max_drop": {}, "relative_drop": {"correction_rate": 0.2}})
    cur = rate(0.30, 2000, name="correction_rate").model_copy(update={"direction": "lower"})
    base = rate(0.20, 2000, name="correction_rate").model_copy(update={"direction": "lower"})
    assert decide([cur], [], [], policy, now=NOW, baseline=[base]).action == Action.RETRAIN
    assert decide([base], [], [], policy, now=NOW, baseline=[cur]).action == Action.NONE


def test_policy_rejects_a_relative_fraction_outside_0_1():
    with pytest.raises(ValueError, match="relative_drop"):
        PolicyConfig(relative_drop={"thumbs_up_rate": 1.5})


def test_gate_says_how_many_items_had_no_pair():
    champ = samples("g", [0] * 60)
    chall = samples("g", [1] * 60 + [0] * 5)  # five items the champion was never scored on
    d = gate({"golden": [chall]}, {"golden": [champ]}, ROLES, POLICY)
    assert d.action == Action.PROMOTE and "on 60 shared items (5 unpaired items ignored)" in d.reasons[0]


@pytest.mark.parametrize("gain, action", [(0.08, Action.PROMOTE), (0.0, Action.REJECT)])
def test_gate_continuous_scores_use_the_paired_bootstrap(gain, action):
    rng = np.random.default_rng(31)
    base = rng.uniform(0.2, 0.8, 300)
    champ = SampleResults(task="g", model="m", metric="rouge", items={f"i{k}": float(v) for k, v in enumerate(base)})
    noisy = np.clip(base + gain + rng.normal(0, 0.05, 300), 0, 1)
    chall = SampleResults(task="g", model="m", metric="rouge", items={f"i{k}": float(v) for k, v in enumerate(noisy)})
    d = gate({"golden": [chall]}, {"golden": [champ]}, ROLES, POLICY)
    assert d.action == action, d.reasons
    assert "paired-bootstrap SE" in d.reasons[0] and "on 300 shared items" in d.reasons[0]


def test_record_training_keeps_the_budget_period_and_sums_hours():
    from driftloop.core.loopstate import LoopMemory

    m = LoopMemory()
    m.record_training(NOW - timedelta(hours=30), 3600)  # outside the budget period by the next record
    m.record_training(NOW - timedelta(hours=2), 1800)
    m.record_training(NOW, 900)
    assert [t.seconds for t in m.training] == [1800, 900]  # the 30-hour-old one is dropped
    assert m.recent_training_hours(NOW) == 0.75
    assert LoopMemory.load(m.dump()).recent_training_hours(NOW) == 0.75  # survives the state row
