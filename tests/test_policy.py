"""Table-driven tests of the pure decision functions and the statistics under them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from driftloop import stats
from driftloop.config import PolicyConfig
from driftloop.policy import decide, gate
from driftloop.types import Action, MetricResult, SampleResults

NOW = datetime(2026, 11, 20, tzinfo=timezone.utc)


def rate(value: float, n: int, segment: dict | None = None, name: str = "thumbs_up_rate") -> MetricResult:
    v, lo, hi = stats.wilson(round(value * n), n)
    return MetricResult(name=name, value=v, ci_low=lo, ci_high=hi, n=n, source="quality", segment=segment or {})


POLICY = PolicyConfig(floors={"thumbs_up_rate": 0.7}, max_drop={"thumbs_up_rate": 0.1}, min_n=30)


@pytest.mark.parametrize("case, current, reference, action, fragment", [
    ("clear regression", [rate(0.55, 800)], [rate(0.85, 2000)], Action.RETRAIN, "below the floor 0.70"),
    ("noise only", [rate(0.84, 600)], [rate(0.85, 2000)], Action.NONE, "no quality metric"),
    ("noise near the floor", [rate(0.69, 100)], [rate(0.72, 2000)], Action.NONE, "no quality metric"),
    ("one segment only", [rate(0.80, 900), rate(0.15, 300, {"topic": "billing"}), rate(0.88, 600, {"topic": "account"})],
     [rate(0.86, 2000), rate(0.87, 700, {"topic": "account"})], Action.RETRAIN, "in topic=billing"),
    ("insufficient data", [rate(0.10, 12, {"topic": "billing"})], [], Action.NONE, "insufficient data (n=12 < 30)"),
    ("drop beyond margin above the floor", [rate(0.72, 3000)], [rate(0.90, 3000)], Action.RETRAIN, "drop 0.18 > 0.10"),
])
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


@pytest.mark.parametrize("state, policy_kw, action, fragment", [
    ({"breaches": []}, {"debounce_m": 2, "debounce_n": 3}, Action.ALERT, "debounce: 1 of the last 1"),
    ({"breaches": [False, True]}, {"debounce_m": 2, "debounce_n": 3}, Action.RETRAIN, "below the floor"),
    ({"breaches": [True, False, False]}, {"debounce_m": 2, "debounce_n": 3}, Action.ALERT, "debounce: 1 of the last 3"),
    ({"last_retrain_at": (NOW - timedelta(hours=2)).isoformat()}, {"cooldown_hours": 6}, Action.ALERT, "cooldown: last retrain 2.0 h ago"),
    ({"last_retrain_at": (NOW - timedelta(hours=7)).isoformat()}, {"cooldown_hours": 6}, Action.RETRAIN, "below the floor"),
    ({"retrains": [(NOW - timedelta(hours=h)).isoformat() for h in (1, 5)]}, {"max_retrains_per_day": 2}, Action.ALERT, "budget: 2 retrains"),
    ({"retrains": [(NOW - timedelta(hours=h)).isoformat() for h in (1, 30)]}, {"max_retrains_per_day": 2}, Action.RETRAIN, "below the floor"),
])
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


@pytest.mark.parametrize("case, golden, canary, action, fragment", [
    ("clear win, canary equal", paired(120, 0.4, 0.9, 1, "g"), paired(120, 0.95, 0.95, 2, "c"), Action.PROMOTE, "pass"),
    ("no real gain", paired(120, 0.6, 0.6, 3, "g"), paired(120, 0.95, 0.95, 4, "c"), Action.REJECT, "fail"),
    ("gain but canary worse by more than the margin", paired(120, 0.4, 0.9, 5, "g"), paired(200, 0.95, 0.70, 6, "c"),
     Action.REJECT, "worse by more than the margin"),
    ("too few golden items", paired(12, 0.2, 1.0, 7, "g"), paired(120, 0.95, 0.95, 8, "c"), Action.REJECT,
     "insufficient data (n=12 < 30)"),
])
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
        d = gate({"golden": [samples("g", chall.astype(int).tolist())]},
                 {"golden": [samples("g", champ.astype(int).tolist())]}, ROLES, POLICY)
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
    assert stats.mcnemar_exact(0, 6).p_value == pytest.approx(2 * 0.5 ** 6)
    assert stats.mcnemar_exact(3, 3).p_value == 1.0


def test_paired_sample_size_gives_power():
    n = stats.paired_sample_size(0.05, 0.15, alpha=0.05, power=0.8)
    rng = np.random.default_rng(1)
    detected = 0
    for _ in range(400):
        # discordant share 0.15, split so that challenger loses 0.05 net: b=0.10, c=0.05
        u = rng.random(n)
        b = int(np.sum(u < 0.10))
        c = int(np.sum((u >= 0.10) & (u < 0.15)))
        detected += stats.mcnemar_exact(b, c).p_value < 0.05
    assert detected / 400 >= 0.75
