"""Feedback quality and segment gaps: exact values, honest intervals, and the registry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftloop.core.config import MonitorConfig, PolicyConfig
from driftloop.core.errors import InputError
from evaluators import registry
from evaluators.quality import quality_metrics, segment_gaps

NAN = np.nan

# Hand-made window: topic a has 4 events, b has 3, and two events have no topic.
HAND = pd.DataFrame(
    {
        "thumbs_up": [1.0, 1.0, 0.0, NAN, 0.0, 0.0, 1.0, 1.0, NAN],
        "has_correction": [False, False, True, False, True, True, False, False, True],
        "rating": [1.0, 0.5, NAN, 0.75, 0.0, 0.25, NAN, 1.0, 0.5],
        "topic": ["a", "a", "a", "a", "b", "b", "b", "", None],
        "tier": ["free", "pro", "free", "pro", "free", "pro", "free", "pro", "free"],
    }
)


def by_label(results):
    return {m.label(): m for m in results}


@pytest.mark.parametrize(
    "label, value, n",
    [
        ("thumbs_up_rate", 4 / 7, 7),
        ("thumbs_up_rate[topic=a]", 2 / 3, 3),
        ("thumbs_up_rate[topic=b]", 1 / 3, 3),
        ("thumbs_up_rate[tier=free]", 2 / 4, 4),
        ("thumbs_up_rate[tier=pro]", 2 / 3, 3),
        ("correction_rate", 4 / 9, 9),
        ("correction_rate[topic=a]", 1 / 4, 4),
        ("correction_rate[topic=b]", 2 / 3, 3),
        ("mean_rating", 4.0 / 7, 7),
        ("mean_rating[topic=a]", 2.25 / 3, 3),
        ("mean_rating[topic=b]", 0.25 / 2, 2),
        ("mean_rating[tier=pro]", 2.5 / 4, 4),
    ],
)
def test_values_and_counts_are_exact_on_a_hand_made_frame(label, value, n):
    m = by_label(quality_metrics(HAND, ["topic", "tier"], min_n=1))[label]
    assert m.value == pytest.approx(value)
    assert m.n == n
    assert m.ci_low <= m.value <= m.ci_high
    assert m.source == "quality" and m.threshold is None and m.passed is None and m.note == ""


def test_every_metric_reports_the_same_groups_in_a_stable_order():
    labels = [m.label() for m in quality_metrics(HAND, ["topic", "tier"], min_n=1)]
    groups = ["", "[topic=a]", "[topic=b]", "[tier=free]", "[tier=pro]"]
    # "" and None topics count only in the overall figure
    assert labels == [f"{name}{g}" for name in ("thumbs_up_rate", "correction_rate", "mean_rating") for g in groups]


def test_direction_is_declared_per_metric():
    direction = {m.name: m.higher_is_better for m in quality_metrics(HAND, [])}
    assert direction == {"thumbs_up_rate": True, "correction_rate": False, "mean_rating": True}


def test_small_groups_keep_their_value_but_are_flagged_insufficient():
    results = by_label(quality_metrics(HAND, ["topic"], min_n=4))
    a, b = results["correction_rate[topic=a]"], results["correction_rate[topic=b]"]
    assert a.note == "" and a.value == pytest.approx(0.25)  # n=4 reaches min_n
    assert b.note == "insufficient data (n=3)" and b.value == pytest.approx(2 / 3) and b.passed is None
    assert results["mean_rating[topic=b]"].note == "insufficient data (n=2)"


@pytest.mark.parametrize(
    "frame",
    [
        HAND.iloc[:0],
        pd.DataFrame({"topic": ["a", "b"]}),  # no metric columns at all
        HAND.assign(thumbs_up=NAN, rating=NAN, has_correction=None),
    ],
    ids=["empty", "no-metric-columns", "all-null"],
)
def test_no_observations_give_none_with_insufficient_data(frame):
    results = quality_metrics(frame, ["topic", "missing_field"])
    overall = [m for m in results if not m.segment]
    assert [m.name for m in overall] == ["thumbs_up_rate", "correction_rate", "mean_rating"]
    for m in results:
        assert m.value is None and m.ci_low is None and m.n == 0
        assert m.note == "insufficient data (n=0)"


def test_emoji_segment_values_are_ordinary_groups():
    frame = pd.DataFrame({"thumbs_up": [1.0, 0.0, 1.0, 1.0], "topic": ["🙂", "🙂", "naïve", "a,b=c"]})
    results = by_label(quality_metrics(frame, ["topic"], min_n=1))
    assert results["thumbs_up_rate[topic=🙂]"].value == pytest.approx(0.5)
    assert results["thumbs_up_rate[topic=naïve]"].n == 1
    gap = segment_gaps(frame, ["topic"], min_n=1)[0]
    assert gap.segment == {"field": "topic", "worst": "🙂", "best": "a,b=c"}  # tie at 1.0: the first name wins


def _simulated_groups(rng, column, draw, groups, n):
    """One frame in which each `sim` group is an independent sample: one call covers them all."""
    return pd.DataFrame({column: draw(rng, groups * n), "sim": np.repeat(np.arange(groups).astype(str), n)})


@pytest.mark.parametrize(
    "name, column, draw, truth, n",
    [
        ("thumbs_up_rate", "thumbs_up", lambda r, k: (r.random(k) < 0.8).astype(float), 0.8, 80),
        ("correction_rate", "has_correction", lambda r, k: r.random(k) < 0.1, 0.1, 120),
        # 1-5 stars normalised to [0, 1], skewed towards good ratings
        (
            "mean_rating",
            "rating",
            lambda r, k: r.choice([0, 0.25, 0.5, 0.75, 1], k, p=[0.1, 0.1, 0.2, 0.3, 0.3]),
            0.25 * 0.1 + 0.5 * 0.2 + 0.75 * 0.3 + 1 * 0.3,
            100,
        ),
    ],
)
def test_95_percent_intervals_cover_the_true_value_about_95_percent_of_the_time(name, column, draw, truth, n):
    frame = _simulated_groups(np.random.default_rng(7), column, draw, groups=500, n=n)
    sims = [m for m in quality_metrics(frame, ["sim"]) if m.name == name and m.segment]
    assert len(sims) == 500 and all(m.n == n for m in sims)
    coverage = np.mean([m.ci_low <= truth <= m.ci_high for m in sims])
    assert 0.92 <= coverage <= 0.98, coverage


def _rates_frame(rates: dict[str, tuple[float, int]], column="thumbs_up", seed=0) -> pd.DataFrame:
    """Groups with exactly round(rate * n) successes out of n, shuffled."""
    rows = []
    for group, (rate, n) in rates.items():
        k = round(rate * n)
        rows += [(group, 1.0)] * k + [(group, 0.0)] * (n - k)
    frame = pd.DataFrame(rows, columns=["topic", column])
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.mark.parametrize(
    "metric, rates, worst, best, gap",
    [
        (
            "thumbs_up_rate",
            {"account": (0.9, 100), "billing": (0.5, 100), "shipping": (0.8, 100)},
            "billing",
            "account",
            0.4,
        ),
        # a tiny group with the worst rate is excluded from the verdict
        (
            "thumbs_up_rate",
            {"account": (0.9, 100), "billing": (0.0, 5), "shipping": (0.7, 50)},
            "shipping",
            "account",
            0.2,
        ),
        # equal rates: still two different groups, and no gap
        ("thumbs_up_rate", {"b": (0.8, 50), "a": (0.8, 50)}, "a", "b", 0.0),
        # lower is better: the worst group has the most corrections
        (
            "correction_rate",
            {"account": (0.1, 100), "billing": (0.6, 100), "shipping": (0.2, 100)},
            "billing",
            "account",
            0.5,
        ),
    ],
)
def test_segment_gaps_names_the_worst_and_best_eligible_groups(metric, rates, worst, best, gap):
    column = {"thumbs_up_rate": "thumbs_up", "correction_rate": "has_correction"}[metric]
    frame = _rates_frame(rates, column)
    (m,) = segment_gaps(frame, ["topic"], metric=metric, min_n=30)
    assert m.segment == {"field": "topic", "worst": worst, "best": best}
    assert m.value == pytest.approx(gap)
    assert m.ci_low <= m.value <= m.ci_high and m.ci_low < m.ci_high
    assert m.source == "bias" and m.higher_is_better is False and m.passed is None
    assert m.n == rates[worst][1] + rates[best][1]
    small = [g for g, (_, n) in rates.items() if n < 30]
    for g in small:
        assert f"{g}: insufficient data (n={rates[g][1]})" in m.note


def test_segment_gap_interval_is_seeded_and_narrows_with_more_data():
    few = _rates_frame({"a": (0.9, 40), "b": (0.6, 40)})
    many = _rates_frame({"a": (0.9, 4000), "b": (0.6, 4000)})
    first, again = segment_gaps(few, ["topic"])[0], segment_gaps(few, ["topic"])[0]
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    wide = first.ci_high - first.ci_low
    narrow = segment_gaps(many, ["topic"])[0]
    assert narrow.ci_high - narrow.ci_low < wide / 5
    assert narrow.ci_low > 0.25  # 0.3 is the true gap


@pytest.mark.parametrize(
    "frame, fields, note",
    [
        (_rates_frame({"a": (0.9, 100), "b": (0.5, 10)}), ["topic"], "1 group(s) with n >= 30, need 2"),
        (_rates_frame({"a": (0.9, 100)}), ["topic"], "1 group(s) with n >= 30, need 2"),
        (_rates_frame({"a": (0.9, 100)}), ["locale"], "segment field 'locale' is not in the frame"),
        (HAND.iloc[:0], ["topic"], "0 group(s) with n >= 30, need 2"),
    ],
)
def test_segment_gaps_without_two_eligible_groups_gives_no_value(frame, fields, note):
    (m,) = segment_gaps(frame, fields)
    assert m.value is None and m.passed is None and m.segment == {"field": fields[0]}
    assert m.note.startswith("insufficient data") and note in m.note


def test_segment_gaps_rejects_an_unknown_metric():
    with pytest.raises(ValueError, match="thumbs_up_rate"):
        segment_gaps(HAND, ["topic"], metric="thumbs_up")


def test_registry_lists_and_runs_the_quality_evaluators():
    assert {"drift", "quality", "segment_gaps"} <= set(registry.names())
    context = {
        "current": _rates_frame({"a": (0.9, 40), "b": (0.6, 40)}),
        "monitor": MonitorConfig(segment_fields=["topic"]),
        "policy": PolicyConfig(min_n=50),
    }
    quality = by_label(registry.get("quality")(context))
    assert quality["thumbs_up_rate[topic=a]"].note == "insufficient data (n=40)"  # min_n from the policy
    (gap,) = registry.get("segment_gaps")(context)
    assert gap.value is None  # both groups are under min_n=50


def test_an_unknown_evaluator_name_suggests_the_close_one():
    with pytest.raises(KeyError) as err:
        registry.get("qualty")
    assert isinstance(err.value, InputError)  # the CLI turns it into exit code 2
    assert str(err.value).startswith("unknown evaluator 'qualty'; did you mean 'quality'?")


def test_registering_a_taken_name_is_an_error_and_context_keys_are_checked():
    with pytest.raises(ValueError, match="already registered"):
        registry.register("quality")(lambda context: [])
    with pytest.raises(InputError, match="no 'current'"):
        registry.get("quality")({})
