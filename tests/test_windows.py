"""Monitoring windows: by time or by event count, reference preceding, pinned or the champion's,
on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from driftloop.core.config import ConfigError, WindowConfig, load_config
from driftloop.core.types import FeedbackEvent
from driftloop.services.windows import (
    EPS,
    Windows,
    champion_window,
    nth_newest_ts,
    read_prompt_sample,
    record_window,
    resolve_windows,
    window_fingerprint,
    windows,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def hourly(n: int, prompt=lambda i: f"prompt {i}") -> list[FeedbackEvent]:
    return [FeedbackEvent(event_id=f"e{i}", ts=T0 + timedelta(hours=i), prompt=prompt(i)) for i in range(n)]


@pytest.mark.parametrize(
    "cfg, last_day, expect_ref_start",
    [
        (WindowConfig(current_days=1, reference_days=7), 5, T0),  # the reference is clipped at the first event
        (WindowConfig(current_days=2, reference_days=3), 9, T0 + timedelta(days=4) + EPS),
    ],
)
def test_time_windows_end_at_the_newest_event_and_the_reference_precedes(cfg, last_day, expect_ref_start):
    last = T0 + timedelta(days=last_day)
    w = windows(T0, last, cfg)
    assert w.current_end == last + EPS
    assert w.current_start == last + EPS - timedelta(days=cfg.current_days) == w.reference_end
    assert w.reference_start == expect_ref_start


def test_a_pinned_reference_stays_put_while_the_current_window_slides():
    cfg = WindowConfig(reference="pinned", pinned_start=T0, pinned_end=T0 + timedelta(days=2))
    for last in (T0 + timedelta(days=5), T0 + timedelta(days=50)):
        w = windows(T0, last, cfg)
        assert (w.reference_start, w.reference_end, w.reference_source) == (T0, T0 + timedelta(days=2), "pinned")
        assert w.current_end == last + EPS


@pytest.mark.parametrize(
    "yaml_windows, message",
    [
        ("{reference: pinned}", "reference: pinned needs pinned_start and pinned_end"),
        (
            "{reference: pinned, pinned_start: '2025-01-02T00:00:00+00:00', pinned_end: '2025-01-01T00:00:00+00:00'}",
            "pinned_start must be before pinned_end",
        ),
        (
            "{reference: pinned, pinned_start: '2025-01-01T00:00:00', pinned_end: '2025-01-02T00:00:00+00:00'}",
            "has no timezone",
        ),
        ("{slide_by: rows}", "slide_by"),
    ],
)
def test_bad_window_settings_are_config_errors_that_name_the_key(tmp_path, yaml_windows, message):
    p = tmp_path / "driftloop.yaml"
    p.write_text(f"monitor: {{windows: {yaml_windows}}}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(p)


def test_count_windows_hold_the_newest_events_and_the_ones_before(store):
    store.add_events(hourly(100), source="t")
    w = resolve_windows(store, WindowConfig(slide_by="events", current_events=10, reference_events=30))
    assert w.current_start == T0 + timedelta(hours=90) and w.current_end == T0 + timedelta(hours=99) + EPS
    assert (w.reference_start, w.reference_end) == (T0 + timedelta(hours=60), w.current_start)
    cur = store.read_window(w.current_start, w.current_end, [])
    ref = store.read_window(w.reference_start, w.reference_end, [])
    assert (len(cur), len(ref)) == (10, 30)
    assert window_fingerprint(store, w.reference_start, w.reference_end)["n"] == 30


def test_count_windows_larger_than_the_store_start_at_the_oldest_event(store):
    store.add_events(hourly(5), source="t")
    w = resolve_windows(store, WindowConfig(slide_by="events", current_events=3, reference_events=100))
    assert w.reference_start == T0 and nth_newest_ts(store, 6) is None
    assert w.current_start == T0 + timedelta(hours=2)


def test_an_empty_store_has_no_windows(sqlite_store):
    assert resolve_windows(sqlite_store, WindowConfig(slide_by="events")) is None


def test_the_champion_reference_is_the_window_recorded_for_its_promoting_cycle(tmp_path, sqlite_store):
    sqlite_store.add_events(hourly(48), source="t")
    book = tmp_path / "windows.json"
    promoted = Windows(T0, T0 + timedelta(hours=12), T0 + timedelta(hours=12), T0 + timedelta(hours=24))
    record_window(book, "cycle-run-1", promoted)
    cfg = WindowConfig(reference="champion", current_days=0.5)
    w = resolve_windows(sqlite_store, cfg, champion_window(book, "cycle-run-1"), "champion version 2")
    assert (w.reference_start, w.reference_end, w.reference_source) == (
        T0 + timedelta(hours=12),
        T0 + timedelta(hours=24),
        "champion version 2",
    )
    # A champion no monitored cycle promoted (the first one) falls back to the preceding window, and says so.
    w = resolve_windows(sqlite_store, cfg, champion_window(book, None), "champion version 1")
    assert w.reference_end == w.current_start
    assert "no monitored window for the champion version 1" in w.reference_source


def test_prompt_samples_are_evenly_spaced_and_cut_by_the_database(sqlite_store):
    sqlite_store.add_events(
        hourly(100, prompt=lambda i: ("😀" if i % 2 else "y") * 1_000_000 if i == 0 else f"p{i}"), source="t"
    )
    got = read_prompt_sample(sqlite_store, T0, T0 + timedelta(days=10), n=10, max_chars=100)
    assert len(got) == 10 and got[0] == "y" * 100  # the 1 MB prompt arrives as its first 100 characters
    assert got[1:] == [f"p{i}" for i in range(10, 100, 10)]
    assert read_prompt_sample(sqlite_store, T0 - timedelta(days=2), T0, n=10, max_chars=100) == []
