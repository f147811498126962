"""Judging a stored window end to end (driftloop.services.judging): texts read from the store,
verdicts cached, calibration, PPI++ estimates, the figures logged and the monitor's judge rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from driftloop.core.config import Config
from driftloop.core.types import FeedbackEvent
from driftloop.services.judging import judge_figures, judge_window_events, read_texts

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def events(n: int, seed: int = 0) -> list[FeedbackEvent]:
    """Every event has a correction (the ideal answer); a good response repeats it, a bad one does not.
    A fifth carry the user's thumbs, which agree with the truth."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        good = bool(rng.random() < 0.7)
        ideal = f"open billing then choose plan {i % 7} and confirm"
        out.append(
            FeedbackEvent(
                event_id=f"e{i}",
                ts=T0 + timedelta(seconds=i),
                prompt=f"how do I change plan {i % 7}?",
                response=ideal if good else "please contact support",
                correction=ideal,
                thumbs_up=good if i % 5 == 0 else None,
                segment={"topic": "billing" if i % 2 else "account"},
            )
        )
    return out


def test_a_stored_window_is_judged_calibrated_and_estimated(sqlite_store, tmp_path):
    sqlite_store.add_events(events(600), source="test")
    cfg = Config(
        state_dir=str(tmp_path / "state"),
        judges=[
            {
                "name": "matches_ideal",
                "rubric": "{{ response }} vs {{ correction }}{{ verdict }}",
                "backend": {"kind": "reference", "threshold": 0.5},
                "min_labels": 40,
                "max_calls": 1000,
            }
        ],
    )
    start, end = T0, T0 + timedelta(hours=1)
    frame = sqlite_store.read_window(start, end, ["topic"])
    texts = read_texts(sqlite_store, start, end, ["e1", "e2", "nope"])
    assert set(texts) == {"e1", "e2"} and texts["e1"].correction.startswith("open billing")
    lines: list[str] = []
    out = judge_window_events(cfg, sqlite_store, frame, start, end, lines.append)
    cal = out.calibrations[0]
    assert cal.judged == 600 and cal.calls == 600 and cal.over_budget == 0
    assert cal.overall.n == 120 and cal.overall.kappa == 1.0  # the lexical judge is exact on this data
    assert out.window.findings[0].kind == "judge_trusted"
    overall = next(m for m in out.window.estimates if not m.segment)
    assert overall.n == 120 and overall.n_judged == 480 and overall.estimator == "ppi"
    truth = np.mean([e.response == e.correction for e in events(600)])
    # A perfect judge: the estimate is within a point of the true share, its interval under half as wide as the labels alone give.
    assert abs(overall.value - truth) < 0.01 and overall.ci_low < truth < overall.ci_high
    assert (overall.ci_high - overall.ci_low) < 0.5 * 2 * 1.96 * np.sqrt(truth * (1 - truth) / 120)
    assert any("600/600 new verdicts" in line for line in lines)
    # Judged again: every verdict comes from the cache.
    again = judge_window_events(cfg, sqlite_store, frame, start, end)
    assert again.calibrations[0].calls == 0 and again.window.estimates == out.window.estimates
    logged = judge_figures(out.calibrations, out.window)
    names = {m.name for m in logged}
    assert names == {"judge_kappa", "thumbs_up_rate_ppi", "judge_calls", "judge_tokens", "judge_seconds"}
    # What the pass cost, per judge: 600 new verdicts, no model tokens (a reference judge), time spent; the cached pass none.
    cost = {m.name: m.value for m in logged if m.name.startswith("judge_") and m.name != "judge_kappa"}
    assert cost["judge_calls"] == 600 and cost["judge_tokens"] == 0 and cost["judge_seconds"] > 0
    assert {m.segment["judge"] for m in logged if m.name == "judge_calls"} == {out.calibrations[0].judge}
    again_cost = {m.name: m.value for m in judge_figures(again.calibrations, again.window) if m.name == "judge_seconds"}
    assert again_cost == {"judge_seconds": 0.0}
    assert {m.segment.get("topic") for m in logged if m.name == "judge_kappa"} == {None, "account", "billing"}


def test_monitor_table_has_a_judge_section(sqlite_store, tmp_path):
    from rich.console import Console

    from driftloop.app.commands.monitor import monitor_table
    from flows.monitor import MonitorResult

    sqlite_store.add_events(events(300, seed=1), source="test")
    cfg = Config(
        state_dir=str(tmp_path / "state"),
        judges=[
            {
                "name": "strict",
                "rubric": "{{ correction }}{{ verdict }}",
                "backend": {"kind": "reference"},
                "min_labels": 100,
            }
        ],
    )
    start, end = T0, T0 + timedelta(hours=1)
    out = judge_window_events(cfg, sqlite_store, sqlite_store.read_window(start, end, ["topic"]), start, end)
    res = MonitorResult(judged=out.window, judges=out.calibrations)
    console = Console(width=400, record=True)  # each reason on one line
    console.print(monitor_table(res))
    text = console.export_text()
    assert "judge strict: kappa" in text and "fewer than 100" in text  # 60 labels: shown, not used
    assert "thumbs_up_rate (PPI++)" in text and "shown only" in text and "60+240" in text


def test_a_judged_window_is_stored_by_key_and_judged_again_when_the_judge_or_budget_says_so(sqlite_store, tmp_path):
    unique = [e.model_copy(update={"prompt": f"{e.prompt} ({e.event_id})"}) for e in events(300, seed=2)]
    sqlite_store.add_events(unique, source="test")  # one verdict per event
    judge = {"name": "j", "rubric": "{{ correction }}{{ verdict }}", "backend": {"kind": "reference"}}
    cfg = Config(state_dir=str(tmp_path / "state"), judges=[{**judge, "min_labels": 40, "max_calls": 200}])
    start, end = T0, T0 + timedelta(hours=1)
    reads = []

    def frame():
        reads.append(1)
        return sqlite_store.read_window(start, end, ["topic"])

    # 100 events over the budget: judged, not stored, so the next pass judges the rest.
    first = judge_window_events(cfg, sqlite_store, frame, start, end, window_key="w1")
    assert (first.calibrations[0].calls, first.calibrations[0].over_budget, first.stored) == (200, 100, False)
    second = judge_window_events(cfg, sqlite_store, frame, start, end, window_key="w1")
    assert (second.calibrations[0].calls, second.calibrations[0].over_budget, second.stored) == (100, 0, False)
    assert reads == [1, 1]
    # Within the budget: stored; the same window and judges come back without a read or a call.
    third = judge_window_events(cfg, sqlite_store, frame, start, end, window_key="w1")
    assert third.stored and reads == [1, 1] and third.calibrations[0].calls == 0
    assert third.window == second.window and third.calibrations[0].overall == second.calibrations[0].overall
    # Another window key, or a judge configured differently, is judged again (verdicts from the cache).
    assert not judge_window_events(cfg, sqlite_store, frame, start, end, window_key="w2").stored
    stricter = Config(state_dir=cfg.state_dir, judges=[{**judge, "min_labels": 500, "max_calls": 200}])
    fresh = judge_window_events(stricter, sqlite_store, frame, start, end, window_key="w1")
    assert not fresh.stored and fresh.window.findings[0].kind == "judge_untrusted" and reads == [1, 1, 1, 1]
