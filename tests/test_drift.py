"""Drift report: verdicts on known shifts, and no crash on the windows production sends."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftloop.core.config import MonitorConfig
from evaluators import registry
from evaluators.drift import DriftOutput, drift_report

FEATURES = ["prompt_len", "response_len", "latency_ms", "tokens_in", "tokens_out", "model_version", "topic"]


def window(
    n: int,
    seed: int,
    *,
    latency_shift: float = 0.0,
    topics=("account", "shipping", "returns"),
    versions=("3",),
    topic_p=None,
) -> pd.DataFrame:
    """A window frame shaped like the store's, with the knobs the tests turn."""
    rng = np.random.default_rng(seed)
    tokens_in = rng.integers(5, 60, n).astype(float)
    return pd.DataFrame(
        {
            "event_id": [f"e{seed}-{i}" for i in range(n)],
            "ts": pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s"),
            "model_version": rng.choice(list(versions), n),
            "prompt_len": rng.integers(10, 200, n),
            "response_len": rng.integers(20, 400, n),
            "latency_ms": np.where(rng.random(n) < 0.05, np.nan, rng.normal(300 + latency_shift, 50, n)),
            "tokens_in": tokens_in,
            "tokens_out": tokens_in * 2 + rng.integers(0, 10, n),
            "rating": rng.choice([0.0, 0.5, 1.0, np.nan], n),
            "thumbs_up": rng.choice([1.0, 0.0, np.nan], n),
            "has_correction": rng.random(n) < 0.1,
            "topic": rng.choice(list(topics), n, p=topic_p),
            "locale": rng.choice(["en", "de"], n),
        }
    )


def by_column(out: DriftOutput) -> dict[str, object]:
    return {m.segment["column"]: m for m in out.metrics if m.name == "drift_score"}


def share(out: DriftOutput):
    (m,) = [m for m in out.metrics if m.name == "drifted_share"]
    return m


# Evidently picks p-value tests up to 1,000 reference rows and distances above: test both regimes.
REGIMES = {"p-values (ref 600)": (600, 300), "distances (ref 2500)": (2500, 400)}


@pytest.mark.parametrize("regime", REGIMES)
def test_no_shift_gives_no_drift_verdict_on_any_column(regime):
    n_ref, n_cur = REGIMES[regime]
    out = drift_report(window(n_ref, 1), window(n_cur, 2), FEATURES)
    cols = by_column(out)
    compared = [c for c in FEATURES if c != "model_version"]  # one version in both: skipped
    assert {c for c in compared if cols[c].passed is True} == set(compared)
    assert out.summary["columns_drifted"] == []
    assert share(out).value == 0.0 and share(out).passed is True


@pytest.mark.parametrize(
    "regime, current_kwargs, flagged",
    [
        ("p-values (ref 600)", {"latency_shift": 40.0}, "latency_ms"),
        ("distances (ref 2500)", {"latency_shift": 40.0}, "latency_ms"),
        # a new topic taking a fifth of the traffic
        (
            "p-values (ref 600)",
            {"topics": ("account", "shipping", "returns", "billing"), "topic_p": [0.27, 0.27, 0.26, 0.2]},
            "topic",
        ),
        (
            "distances (ref 2500)",
            {"topics": ("account", "shipping", "returns", "billing"), "topic_p": [0.27, 0.27, 0.26, 0.2]},
            "topic",
        ),
        # a new model version serving part of the current window
        ("distances (ref 2500)", {"versions": ("3", "4")}, "model_version"),
    ],
)
def test_a_known_shift_flags_exactly_that_column(regime, current_kwargs, flagged):
    n_ref, n_cur = REGIMES[regime]
    out = drift_report(window(n_ref, 1), window(n_cur, 2, **current_kwargs), FEATURES)
    cols = by_column(out)
    assert [c for c, m in cols.items() if m.passed is False] == [flagged]
    assert out.summary["columns_drifted"] == [flagged]
    m = cols[flagged]
    assert m.value is not None and m.threshold is not None
    assert m.n == n_cur and m.source == "drift"
    assert "drift detected" in m.note and "Evidently" in m.note


def test_scores_thresholds_and_share_are_consistent():
    out = drift_report(window(2500, 1), window(400, 2, latency_shift=40.0), FEATURES, drift_share=0.1)
    cols = by_column(out)
    for m in cols.values():
        if m.value is None:
            continue
        # Distances (higher_is_better False) drift at or above the threshold, p-values below it.
        drifted = m.value >= m.threshold if not m.higher_is_better else m.value < m.threshold
        assert m.passed is (not drifted), m.label()
    s = share(out)
    compared = out.summary["columns_evaluated"]
    assert s.value == pytest.approx(1 / len(compared))
    assert s.threshold == 0.1 and s.passed is False  # 1/6 >= 0.1
    assert out.summary["dataset_drift"] is True


@pytest.mark.parametrize(
    "n_ref, n_cur, expect_note",
    [
        (0, 200, "the reference window is empty"),
        (200, 0, "the current window is empty"),
        (0, 0, "both windows are empty"),
    ],
)
def test_an_empty_window_gives_insufficient_data_not_a_crash(n_ref, n_cur, expect_note):
    out = drift_report(window(200, 1).iloc[:n_ref], window(200, 2).iloc[:n_cur], FEATURES)
    assert [m.label() for m in out.metrics] == [f"drift_score[column={c}]" for c in FEATURES] + ["drifted_share"]
    for m in out.metrics:
        assert m.value is None and m.passed is None
        assert m.note.startswith("insufficient data (n=0)") and expect_note in m.note
    assert "insufficient data (n=0)" in out.html and out.html.lstrip().startswith("<!DOCTYPE html>")


def test_an_empty_frame_without_columns_is_insufficient_data():
    out = drift_report(pd.DataFrame(), pd.DataFrame(), ["latency_ms"])
    assert [(m.label(), m.value, m.passed) for m in out.metrics] == [
        ("drift_score[column=latency_ms]", None, None),
        ("drifted_share", None, None),
    ]


def _null_latency(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(latency_ms=np.nan)


def _one_topic(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(topic="account")


def _drop_tokens(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["tokens_out"])


def _keep(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


@pytest.mark.parametrize(
    "ref_fix, cur_fix, column, note",
    [
        (_null_latency, _null_latency, "latency_ms", "all values are null in both windows"),
        (_keep, _null_latency, "latency_ms", "all values are null in the current window"),
        (_one_topic, _one_topic, "topic", "one distinct value ('account')"),
        (_keep, _drop_tokens, "tokens_out", "column missing from the current window"),
        (_drop_tokens, _drop_tokens, "tokens_out", "column missing from both windows"),
    ],
)
def test_an_uncomparable_column_is_skipped_with_a_note_and_the_rest_still_compared(ref_fix, cur_fix, column, note):
    features = [column, "prompt_len", "locale"]  # few columns: Evidently's plots cost ~0.1 s each
    out = drift_report(ref_fix(window(600, 1)), cur_fix(window(300, 2)), features)
    cols = by_column(out)
    assert cols[column].value is None and cols[column].passed is None
    assert note in cols[column].note
    assert column in out.summary["columns_skipped"] and column not in out.summary["columns_evaluated"]
    assert column in out.html  # the page lists what it did not compare
    others = features[1:]
    assert all(cols[c].passed is True for c in others)
    assert share(out).value == 0.0 and f"0 of {len(others)} compared columns" in share(out).note


def test_a_small_current_window_is_insufficient_data():
    out = drift_report(window(600, 1), window(12, 2), ["prompt_len", "topic"], min_n=30)
    assert [(m.label(), m.value, m.passed) for m in out.metrics] == [
        ("drift_score[column=prompt_len]", None, None),
        ("drift_score[column=topic]", None, None),
        ("drifted_share", None, None),
    ]
    assert "insufficient data (n=12)" in by_column(out)["prompt_len"].note


def test_emoji_and_odd_strings_in_segment_values_are_compared_like_any_category():
    values = ("🙂 happy", "naïve", "a,b=c", "")
    ref = window(600, 1, topics=values)
    cur_same = window(300, 2, topics=values)
    cur_new = window(300, 3, topics=values + ("🔥 new",), topic_p=[0.2, 0.2, 0.2, 0.2, 0.2])
    assert by_column(drift_report(ref, cur_same, ["topic"]))["topic"].passed is True
    assert by_column(drift_report(ref, cur_new, ["topic"]))["topic"].passed is False


def test_infinities_count_as_missing_and_nullable_ints_work():
    ref, cur = window(600, 1), window(300, 2)
    cur.loc[cur.index[:3], "latency_ms"] = np.inf
    cur["prompt_len"] = cur["prompt_len"].astype("Int64")
    cur.loc[cur.index[:5], "prompt_len"] = pd.NA
    cols = by_column(drift_report(ref, cur, ["latency_ms", "prompt_len"]))
    assert cols["latency_ms"].passed is True and cols["prompt_len"].passed is True


def test_the_drift_evaluator_runs_from_the_registry_and_leaves_the_page_in_artifacts():
    artifacts: dict = {}
    context = {
        "reference": window(600, 1),
        "current": window(300, 2, latency_shift=40.0),
        # The evaluator compares the features, then the segment fields: none here.
        "monitor": MonitorConfig(features=["latency_ms", "prompt_len"], segment_fields=[], drift_share_alert=0.5),
        "artifacts": artifacts,
    }
    results = registry.get("drift")(context)
    assert [(m.label(), m.passed) for m in results] == [
        ("drift_score[column=latency_ms]", False),
        ("drift_score[column=prompt_len]", True),
        ("drifted_share", False),  # 1 of 2 = 0.5, not below 0.5
    ]
    assert artifacts["drift_summary"]["columns_drifted"] == ["latency_ms"]
    assert "<html" in artifacts["drift_report.html"][:500].lower()
