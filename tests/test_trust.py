"""Decisions that are right on real use: metric directions and targets, margins in a metric's
own units, typed findings, one loop state machine, and the bounds of the loop's memory.

Each test here pins a defect found with real data (a lower-is-better bias metric gated as
higher-is-better, a likelihood difference near 17 gated with a margin of 0.02, a debounce
that could never fire, a retrain failure that ignored a lost lease, an interval note that
claimed a clip it never made). They assert on typed findings, never on English.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from driftloop.core.config import PolicyConfig, TaskSpec, load_config
from driftloop.core.errors import ConfigError
from driftloop.core.gate import gate
from driftloop.core.loopstate import (
    EDGES,
    MAX_BREACHES,
    TABLE,
    Event,
    IllegalTransition,
    LoopMemory,
    State,
    advance,
    legal,
)
from driftloop.core.policy import decide
from driftloop.core.types import Action, MetricResult, MetricSpec, SampleResults

NOW = datetime(2026, 11, 20, tzinfo=UTC)
POLICY = PolicyConfig(min_n=30)
ROLES = {"golden": "target", "bias": "bias"}


def _samples(task: str, values, spec: MetricSpec, metric: str = "m") -> SampleResults:
    return SampleResults(
        task=task, model="x", metric=metric, items={f"i{k}": float(v) for k, v in enumerate(values)}, spec=spec
    )


def _target_pass(n: int = 200) -> tuple[SampleResults, SampleResults]:
    """A golden suite on which the challenger is clearly better, so only the bias task decides."""
    champ = [1] * (n // 2) + [0] * (n - n // 2)
    chall = [1] * n
    return _samples("golden", chall, MetricSpec(), "acc"), _samples("golden", champ, MetricSpec(), "acc")


def _gate_bias(champ_vals, chall_vals, spec: MetricSpec, policy: PolicyConfig = POLICY):
    g1, g0 = _target_pass()
    return gate(
        {"golden": [g1], "bias": [_samples("crows", chall_vals, spec)]},
        {"golden": [g0], "bias": [_samples("crows", champ_vals, spec)]},
        ROLES,
        policy,
    )


def _bias_finding(d):
    return next(f for f in d.findings if f.role == "bias")


rng = np.random.default_rng(0)
LIKELIHOOD_CHAMP = rng.normal(17.0, 4.0, 400)


def test_a_less_biased_challenger_passes_a_lower_is_better_bias_metric():
    spec = MetricSpec(direction="lower", margin=1.0)
    d = _gate_bias(LIKELIHOOD_CHAMP, LIKELIHOOD_CHAMP - 3.0, spec)
    f = _bias_finding(d)
    assert d.action == Action.PROMOTE
    assert f.kind == "non_inferiority" and f.passed and f.direction == "lower"
    assert f.estimate == pytest.approx(3.0)  # improvement, in the metric's units
    assert f.reference == pytest.approx(LIKELIHOOD_CHAMP.mean()) and f.challenger < f.reference


def test_a_more_biased_challenger_fails_a_lower_is_better_bias_metric():
    d = _gate_bias(LIKELIHOOD_CHAMP, LIKELIHOOD_CHAMP + 3.0, MetricSpec(direction="lower", margin=1.0))
    f = _bias_finding(d)
    assert d.action == Action.REJECT and f.passed is False and f.estimate == pytest.approx(-3.0)


def test_a_binary_lower_is_better_rate_uses_the_paired_binary_test():
    # Share of items on which the stereotyped answer was picked: lower is better.
    champ = [1] * 120 + [0] * 80
    always = [1] * 200
    d = _gate_bias(champ, always, MetricSpec(direction="lower"))
    f = _bias_finding(d)
    assert d.action == Action.REJECT and f.passed is False and "McNemar" in f.method or "Agresti" in f.method
    fewer = [1] * 60 + [0] * 140
    assert _gate_bias(champ, fewer, MetricSpec(direction="lower")).action == Action.PROMOTE


@pytest.mark.parametrize(
    "champ_rate, chall_rate, action",
    [
        (0.60, 1.00, Action.REJECT),  # picks the stereotype on every item: far from 0.5
        (0.60, 0.50, Action.PROMOTE),  # at the ideal
        (0.60, 0.40, Action.PROMOTE),  # as far from 0.5 as the champion, on the other side
        (0.50, 0.70, Action.REJECT),  # moved away from the target by more than the margin
    ],
)
def test_a_target_metric_gates_the_distance_to_its_target(champ_rate, chall_rate, action):
    n = 2000  # opposite sides of the target make the distances' errors add up: a larger sample
    champ = [1] * int(champ_rate * n) + [0] * (n - int(champ_rate * n))
    chall = [1] * int(chall_rate * n) + [0] * (n - int(chall_rate * n))
    d = _gate_bias(champ, chall, MetricSpec(target=0.5, margin=0.05))
    f = _bias_finding(d)
    assert d.action == action, d.reasons
    assert f.target == 0.5 and f.method.startswith("paired-bootstrap SE of the distance")
    assert f.estimate == pytest.approx(abs(champ_rate - 0.5) - abs(chall_rate - 0.5), abs=1e-9)


def test_a_role_margin_on_the_scale_of_a_proportion_never_applies_to_another_scale():
    # The bias role's default margin (0.02) on a likelihood difference near 17: no verdict, not a pass.
    d = _gate_bias(LIKELIHOOD_CHAMP, LIKELIHOOD_CHAMP + 0.01, MetricSpec(direction="lower"))
    f = _bias_finding(d)
    assert d.action == Action.REJECT and f.kind == "no_margin" and f.passed is None
    assert "benchmark.suites.bias.tasks[crows].margin" in d.reasons[-1]
    # The task's own margin, in the metric's units, decides it.
    ok = _gate_bias(LIKELIHOOD_CHAMP, LIKELIHOOD_CHAMP + 0.01, MetricSpec(direction="lower", margin=1.0))
    assert ok.action == Action.PROMOTE and _bias_finding(ok).threshold == 1.0
    # A relative margin scales with the champion's score.
    rel = _gate_bias(LIKELIHOOD_CHAMP, LIKELIHOOD_CHAMP + 0.01, MetricSpec(direction="lower", relative_margin=0.1))
    assert _bias_finding(rel).threshold == pytest.approx(0.1 * LIKELIHOOD_CHAMP.mean())


def test_task_config_declares_direction_or_target_and_lm_eval_gives_the_default():
    assert TaskSpec(name="t").metric_spec("lower").direction == "lower"  # lm-eval's higher_is_better
    assert TaskSpec(name="t", direction="higher").metric_spec("lower").direction == "higher"
    spec = TaskSpec(name="t", target=0.5, margin=0.03).metric_spec("higher")
    assert spec.target == 0.5 and spec.margin == 0.03
    with pytest.raises(ValueError, match="a direction or a target, not both"):
        TaskSpec(name="t", target=0.5, direction="lower")


def test_decide_reads_direction_for_drops_and_floors():
    policy = PolicyConfig(floors={"bbq/bias": 0.2}, max_drop={}, min_n=30)
    low = MetricResult(
        name="bbq/bias", value=0.35, ci_low=0.30, ci_high=0.40, n=500, source="benchmark", direction="lower"
    )
    d = decide([], [], [], policy, now=NOW, benchmark=[low])
    f = d.findings[0]
    assert d.action == Action.RETRAIN and f.kind == "floor" and f.breached and f.direction == "lower"
    assert "above the ceiling 0.20" in d.reasons[0]
    fine = low.model_copy(update={"value": 0.10, "ci_low": 0.07, "ci_high": 0.13})
    assert decide([], [], [], policy, now=NOW, benchmark=[fine]).action == Action.NONE


def test_findings_carry_raw_and_holm_adjusted_p_and_the_family_size():
    r = MetricResult(name="thumbs_up_rate", value=0.4, ci_low=0.35, ci_high=0.45, n=400, source="quality")
    seg = r.model_copy(update={"segment": {"topic": "billing"}, "value": 0.8, "ci_low": 0.75, "ci_high": 0.85})
    d = decide([r, seg], [], [], PolicyConfig(floors={"thumbs_up_rate": 0.7}, max_drop={}, min_n=30), now=NOW)
    worst = d.findings[0]
    assert (worst.kind, worst.segment, worst.tests, worst.n) == ("floor", {}, 2, 400)
    assert worst.p_value <= worst.p_adjusted <= 2 * worst.p_value
    assert worst.method == "exact binomial" and worst.passed is False and worst.threshold == 0.7


def test_debounce_over_fifty_windows_can_fire():
    policy = PolicyConfig(floors={"thumbs_up_rate": 0.7}, max_drop={}, min_n=30, debounce_m=60, debounce_n=60)
    memory = LoopMemory()
    for _ in range(59):
        memory.record_breach(True)
    bad = MetricResult(name="thumbs_up_rate", value=0.4, ci_low=0.35, ci_high=0.45, n=400, source="quality")
    assert decide([bad], [], [], policy, memory, now=NOW).action == Action.RETRAIN
    assert len(memory.breaches) == 59
    with pytest.raises(ValueError, match=f"less than or equal to {MAX_BREACHES}"):
        PolicyConfig(debounce_n=MAX_BREACHES + 1)


def test_budget_counts_every_retrain_of_the_period_however_many():
    policy = PolicyConfig(floors={"thumbs_up_rate": 0.7}, max_drop={}, min_n=30, max_retrains_per_day=25)
    memory = LoopMemory()
    for h in range(25):
        memory.record_retrain(NOW - timedelta(minutes=30 * (25 - h)))
    bad = MetricResult(name="thumbs_up_rate", value=0.4, ci_low=0.35, ci_high=0.45, n=400, source="quality")
    d = decide([bad], [], [], policy, memory, now=NOW)
    assert d.action == Action.ALERT and d.findings[0].kind == "budget" and d.findings[0].detail["recent"] == 25


def test_the_state_table_is_the_only_way_the_loop_moves():
    assert advance(State.ARMED, Event.BREACH) == State.TRIGGERED
    assert advance("evaluating", "reject") == State.REJECTED
    with pytest.raises(IllegalTransition, match="promote is not possible in state armed"):
        advance(State.ARMED, Event.PROMOTE)
    # Every state reaches cooldown by hand, and cooldown leads back to armed.
    assert all(legal(s, State.COOLDOWN) for s in State) and legal(State.COOLDOWN, State.ARMED)
    assert not legal(State.ARMED, State.EVALUATING) and not legal(State.PROMOTED, State.ARMED)
    assert EDGES == {(s, t) for (s, _), t in TABLE.items()}


def test_the_store_refuses_an_edge_not_in_the_table(store):
    with pytest.raises(IllegalTransition, match="armed -> promoted"):
        store.transition("p", "promoted", "skip the gate", "A")
    assert store.get_state("p")["version"] == 0 and store.history("p") == []


def test_memory_reads_what_earlier_versions_stored():
    old = {
        "breaches": [True, False],
        "last_retrain_at": "2026-11-19T10:00:00+00:00",
        "retrains": ["2026-11-19T10:00:00+00:00"],
        "baseline": {
            "champion": "1",
            "metrics": [
                {"name": "thumbs_up_rate", "value": 0.8, "n": 100, "higher_is_better": True, "source": "quality"}
            ],
        },
        "pending": {"run_id": "r", "owner": "o", "config": None, "summary": {"cycle": "c"}},
    }
    m = LoopMemory.load(old)
    assert m.breaches == [True, False] and m.recent_retrains(NOW) == 1
    assert m.baseline.metrics[0].direction == "higher" and m.pending.owner == "o"
    assert LoopMemory.load(m.dump()) == m


def test_benchmark_interval_is_clipped_only_where_the_metric_is_bounded():
    from evaluators.benchmark import _interval

    # A likelihood difference that happens to lie in [0, 1]: never clipped, and the note says nothing of it.
    lo, hi, note = _interval(0.05, 0.1, [0.3, -0.2, 1.7, 0.0])
    assert lo == pytest.approx(0.05 - 0.196) and "clipped" not in note
    # A mean of values in [0, 1] is bounded there: clipped, and the note says why.
    lo, hi, note = _interval(0.98, 0.05, [1.0, 0.9, 0.95, 1.0, 0.99])
    assert hi == 1.0 and "clipped to [0,1]" in note
    # Within the bounds nothing is clipped and the note does not claim a clip.
    assert "clipped" not in _interval(0.5, 0.05, [0.4, 0.6, 0.5])[2]


def test_an_unknown_direction_in_the_config_names_the_task(tmp_path):
    p = tmp_path / "driftloop.yaml"
    p.write_text(
        "benchmark:\n  suites:\n    bias:\n      role: bias\n      tasks:\n"
        "        - {name: crows, kind: builtin, metric: pct_stereotype, direction: sideways}\n"
    )
    with pytest.raises(ConfigError, match="benchmark.suites.bias.tasks.0.direction"):
        load_config(p, env={}, check_files=False)


def test_plan_sizes_each_task_of_a_bias_suite_at_its_own_margin(tmp_path, capsys):
    from driftloop.app.cli import main
    from driftloop.core.stats import ni_sample_size

    p = tmp_path / "driftloop.yaml"
    p.write_text(
        "benchmark:\n  suites:\n    bias:\n      role: bias\n      tasks:\n"
        "        - {name: bbq, kind: builtin, metric: acc, margin: 0.02}\n"
        "        - {name: stereo, metric: stereotyped, target: 0.5, margin: 0.03}\n"
        "        - {name: gap, metric: likelihood_diff, direction: lower, margin: 1.0}\n"
        "        - {name: rel, metric: acc, relative_margin: 0.1}\n"
    )
    assert main(["--config", str(p), "plan", "--suite", "bias", "--sd", "gap=3"]) == 0
    out = capsys.readouterr().out
    assert f"bbq acc (lm-eval's direction), margin 0.02: {ni_sample_size(0.02, 0.2**0.5):,} paired items" in out
    assert f"stereo stereotyped (target 0.5), margin 0.03: {ni_sample_size(0.03, 0.2**0.5):,} paired items" in out
    assert "gap likelihood_diff (lower is better), margin 1: 58 paired items (sd of the per-item difference 3" in out
    assert "set benchmark.suites.bias.tasks.3.margin" in out
    assert main(["--config", str(p), "plan", "--suite", "nope"]) == 2
    assert "--suite nope: no such suite (the config has bias" in capsys.readouterr().err
    assert main(["--config", str(p), "plan", "--suite", "bias", "--sd", "gap=x"]) == 2
    assert main(["--config", str(p), "plan"]) == 2


def test_ni_sample_size_reaches_the_power_it_promises():
    from scipy import stats as st

    from driftloop.core.stats import ni_sample_size

    n = ni_sample_size(1.0, 3.0, alpha=0.05, power=0.8)

    # Power of the one-sided t-test at n (noncentral t) is at least 0.8, and at n - 1 below it.
    def power(m):
        df, nc = m - 1, 1.0 * m**0.5 / 3.0
        return st.nct.sf(st.t.isf(0.05, df), df, nc)

    assert power(n) >= 0.8 > power(n - 1)
