"""Judges calibrated on human labels: agreement (kappa), the trust gate, and `decide` on
prediction-powered estimates of a window where only a tenth of the events were rated."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from driftloop.core.config import Config, JudgeSpec, PolicyConfig
from driftloop.core.errors import ConfigError
from driftloop.core.findings import render
from driftloop.core.policy import decide
from driftloop.core.types import Action
from evaluators.judges.calibration import agreement
from evaluators.judges.estimate import combine, judge_window
from evaluators.quality import quality_metrics

NOW = datetime(2026, 3, 1, tzinfo=UTC)
RUBRIC = "Q: {{ prompt }}\nA: {{ response }}\nGood answer?{{ verdict }}"


def spec(**kw) -> JudgeSpec:
    return JudgeSpec(
        name=kw.pop("name", "helpful"), rubric=RUBRIC, backend={"kind": "reference"}, **{"min_labels": 50, **kw}
    )


def window(rate: float, accuracy: float, seed: int, n: int = 1000, rated: float = 0.1):
    """n events with a true thumbs-up rate; a share `rated` carry the human's thumbs, all a judge's verdict."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < rate
    thumbs = np.where(rng.random(n) < rated, truth.astype(float), np.nan)
    verdict = np.where(rng.random(n) < accuracy, truth, ~truth).astype(float)
    topic = np.where(np.arange(n) % 2 == 0, "billing", "account")
    frame = pd.DataFrame({"thumbs_up": thumbs, "topic": topic})
    return frame, pd.Series(verdict, index=frame.index)


def test_kappa_matches_sklearn_and_counts_the_table():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    h = rng.random(400) < 0.7
    j = np.where(rng.random(400) < 0.85, h, ~h)
    a = agreement(h, j)
    assert a.kappa == pytest.approx(cohen_kappa_score(h, j))
    assert a.kappa_low < a.kappa < a.kappa_high
    assert (a.both_good, a.human_only_good, a.judge_only_good, a.both_bad) == (
        int(np.sum(h & j)),
        int(np.sum(h & ~j)),
        int(np.sum(~h & j)),
        int(np.sum(~h & ~j)),
    )
    assert a.accuracy == pytest.approx(np.mean(h == j))
    # One verdict from both raters: kappa is undefined, not 1.
    same = agreement(np.ones(10, bool), np.ones(10, bool))
    assert same.kappa is None and same.kappa_low is None


def test_the_trust_gate_needs_labels_and_a_kappa_lower_bound():
    frame, scores = window(0.8, 0.95, seed=1)
    good = judge_window(frame, scores, spec(), ["topic"])
    assert good.window.findings[0].kind == "judge_trusted"
    assert good.calibration.overall.n == int(frame.thumbs_up.notna().sum())
    assert {a.segment["topic"] for a in good.calibration.segments} == {"account", "billing"}
    # Too few labelled events: shown, not used, and the reason says why.
    few = judge_window(frame, scores, spec(min_labels=500), ["topic"])
    f = few.window.findings[0]
    assert f.kind == "judge_untrusted" and few.window.estimates == [] and few.window.shown
    assert "fewer than 500" in f.detail["reason"]
    # A weak judge: kappa's lower bound under min_kappa.
    frame, scores = window(0.8, 0.62, seed=2)
    weak = judge_window(frame, scores, spec(min_kappa=0.4), ["topic"])
    f = weak.window.findings[0]
    assert f.kind == "judge_untrusted" and f.ci_high is not None and f.ci_low < 0.4
    assert "lower bound below 0.40" in f.detail["reason"]
    d = decide([], [], [], PolicyConfig(), now=NOW, judged=weak.window)
    assert any("judge helpful" in r and "not used" in r for r in d.reasons)
    # The reason also says what kappa sums up: agreement, and how often each side calls a response good.
    a = weak.calibration.overall
    agree, judge_good, human_good = (
        (a.both_good + a.both_bad) / a.n,
        (a.both_good + a.judge_only_good) / a.n,
        (a.both_good + a.human_only_good) / a.n,
    )
    assert abs(human_good - 0.8) < 0.1 and agree < 0.75  # the window's thumbs-up rate; a weak judge
    assert f"(agreeing on {agree:.0%}; good by the judge {judge_good:.0%}, by the humans {human_good:.0%})" in render(f)


def _pair(seed: int, current_rate: float, policy: PolicyConfig):
    """Decisions on one reference/current pair of tenth-rated windows: human-only and with the judge."""
    ref_frame, ref_scores = window(0.85, 0.95, seed=100 + seed)
    cur_frame, cur_scores = window(current_rate, 0.95, seed=200 + seed)
    human_ref, human_cur = quality_metrics(ref_frame, ["topic"]), quality_metrics(cur_frame, ["topic"])
    ref = judge_window(ref_frame, ref_scores, spec(), ["topic"]).window
    cur = judge_window(cur_frame, cur_scores, spec(), ["topic"]).window
    alone = decide(human_cur, human_ref, [], policy, now=NOW)
    judged = decide(human_cur, human_ref, [], policy, now=NOW, judged=cur, reference_judged=ref)
    return human_cur, cur, alone, judged


def test_a_drop_compares_the_current_estimate_with_the_reference_windows_estimate():
    """Both windows judged: the drop test's reference is the reference window's PPI++ estimate where
    the judge is trusted there, and the human-only figure where it is not (or the reference was not judged)."""
    policy = PolicyConfig(floors={}, max_drop={"thumbs_up_rate": 0.05})
    ref_frame, ref_scores = window(0.85, 0.95, seed=7)
    cur_frame, cur_scores = window(0.70, 0.95, seed=8)
    human_ref, human_cur = quality_metrics(ref_frame, ["topic"]), quality_metrics(cur_frame, ["topic"])
    ref = judge_window(ref_frame, ref_scores, spec(), ["topic"]).window
    cur = judge_window(cur_frame, cur_scores, spec(), ["topic"]).window

    def drop_reference(d) -> dict[str, tuple[float, int]]:
        by_metric = {(m.name, tuple(sorted(m.segment.items()))): m.label() for m in human_cur}
        return {
            by_metric[(f.metric, tuple(sorted(f.segment.items())))]: (f.reference, f.n_reference)
            for f in d.of_kind("drop")
        }

    both = drop_reference(decide(human_cur, human_ref, [], policy, now=NOW, judged=cur, reference_judged=ref))
    est = {m.label(): m for m in ref.estimates}
    human = {m.label(): m for m in human_ref}
    assert est["thumbs_up_rate"].value != pytest.approx(human["thumbs_up_rate"].value, abs=1e-6)
    assert both == {k: (est[k].value, est[k].n) for k in est}  # every segment: estimate against estimate
    drop = next(
        f
        for f in decide(human_cur, human_ref, [], policy, now=NOW, judged=cur, reference_judged=ref).of_kind("drop")
        if not f.segment
    )
    assert (drop.estimator, drop.reference_estimator) == ("ppi", "ppi") and drop.reference_n_judged > 0
    assert f"reference: {drop.n_reference} rated + {drop.reference_n_judged} judged)" in render(drop)
    current_only = drop_reference(decide(human_cur, human_ref, [], policy, now=NOW, judged=cur))
    assert current_only == {k: (human[k].value, human[k].n) for k in est}
    # A judge not trusted on the reference's labels: its reference estimates are only shown.
    weak = judge_window(ref_frame, ref_scores, spec(min_labels=500), ["topic"]).window
    assert weak.estimates == [] and weak.shown
    untrusted = drop_reference(decide(human_cur, human_ref, [], policy, now=NOW, judged=cur, reference_judged=weak))
    assert untrusted == current_only


def test_a_tenth_rated_window_gets_a_narrower_interval_and_decide_finds_the_regression():
    """Windows of 1,000 events, ~100 rated; thumbs-up falls from 0.85 to 0.70 with 0.05 tolerated.
    Over 20 seeded pairs the rated events alone find it 8 times, with a 0.95-accurate judge 15."""
    policy = PolicyConfig(floors={}, max_drop={"thumbs_up_rate": 0.05})
    found_alone = found_judged = 0
    ratios = []
    for seed in range(20):
        human_cur, cur, alone, judged = _pair(seed, 0.70, policy)
        overall = next(m for m in cur.estimates if not m.segment)
        rated = next(m for m in human_cur if m.name == "thumbs_up_rate" and not m.segment)
        assert overall.estimator == "ppi" and overall.n == rated.n and overall.n_judged > 8 * rated.n
        ratios.append((overall.ci_high - overall.ci_low) / (rated.ci_high - rated.ci_low))
        found_alone += alone.action == Action.RETRAIN
        found_judged += judged.action == Action.RETRAIN
        if judged.action == Action.RETRAIN:
            drop = next(f for f in judged.of_kind("drop") if f.breached)
            assert drop.method == "normal z, unpaired"
            assert drop.estimate in {m.value for m in cur.estimates}  # decided on the PPI estimate
            # ... and says so, typed and in its reason: a reviewer sees which figures a judge powered.
            assert (drop.estimator, drop.reference_estimator) == ("ppi", "ppi")
            assert (
                drop.n_judged
                == next(m for m in cur.estimates if (m.name, m.segment) == (drop.metric, drop.segment)).n_judged
            )
            assert f"; PPI++ (current: {drop.n} rated + {drop.n_judged} judged, reference: " in render(drop)
            alone_drop = next((f for f in alone.of_kind("drop") if f.metric == drop.metric), None)
            assert alone_drop is None or (alone_drop.estimator == "direct" and "PPI++" not in render(alone_drop))
            assert any("judge helpful" in r and "trusted" in r for r in judged.reasons)
        assert not (alone.action == Action.RETRAIN and judged.action != Action.RETRAIN)
    assert max(ratios) < 0.75  # every judged interval at least a quarter narrower than the rated one
    assert found_alone <= 10 and found_judged >= 14, (found_alone, found_judged)
    # Judged traffic that did not regress: no false trigger.
    assert all(_pair(seed, 0.85, policy)[3].action == Action.NONE for seed in range(10))


def test_combine_uses_the_first_trusted_judge_and_shows_the_other():
    frame, scores = window(0.8, 0.95, seed=3)
    a = judge_window(frame, scores, spec(name="first"), [])
    b = judge_window(frame, scores, spec(name="second"), [])
    both = combine([a, b])
    assert [m.note.split(":")[0] for m in both.estimates] == ["PPI++ with judge first"]
    assert [m.note.split(":")[0] for m in both.shown] == ["PPI++ with judge second"]
    assert [f.detail["judge"] for f in both.findings] == ["first", "second"]


@pytest.mark.parametrize(
    "judge,message",
    [
        ({"backend": {"kind": "gpt"}}, "judge 'helpful': unknown backend 'gpt' (known: hf, openai, reference)"),
        ({"rubric": "{{ response }} good?"}, "judge 'helpful': rubric has no {{ verdict }} placeholder"),
        ({"rubric": "{{ answer }}{{ verdict }}"}, "judge 'helpful': rubric uses answer"),
        ({"rubric": "{% if %}{{ verdict }}"}, "judge 'helpful': rubric is not a valid Jinja2 template"),
    ],
)
def test_config_rejects_bad_judges_naming_them(tmp_path, judge, message):
    from driftloop.core.config import load_config

    base = {"name": "helpful", "rubric": RUBRIC, "backend": {"kind": "reference"}}
    import yaml

    path = tmp_path / "driftloop.yaml"
    path.write_text(yaml.safe_dump({"judges": [{**base, **judge}]}))
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert Config(judges=[base]).judges[0].name == "helpful"


def test_a_rating_judge_estimates_mean_rating_and_binarises_ratings_for_kappa():
    rng = np.random.default_rng(7)
    n = 800
    quality = rng.random(n)  # the response's true quality in [0, 1]
    rating = np.where(rng.random(n) < 0.15, np.round(quality * 4) / 4, np.nan)  # 1-5 stars as 0..1, 15% rated
    score = np.clip(quality + rng.normal(0, 0.1, n), 0, 1)  # a judge that tracks quality closely
    frame = pd.DataFrame({"rating": rating, "topic": "all"})
    out = judge_window(frame, pd.Series(score), spec(label="rating"), ["topic"])
    est = next(m for m in out.window.estimates if not m.segment)
    assert est.name == "mean_rating" and est.n == int(np.sum(~np.isnan(rating))) and est.n_judged == n - est.n
    human = next(m for m in quality_metrics(frame, []) if m.name == "mean_rating")
    assert est.ci_low < quality.mean() < est.ci_high
    assert est.ci_high - est.ci_low < 0.6 * (human.ci_high - human.ci_low)
    # Agreement on good/bad: a rating >= 0.5 is good, a score >= 0.5 too.
    agree = out.calibration.overall
    assert agree.n == est.n and agree.both_good + agree.both_bad > 0.8 * agree.n
