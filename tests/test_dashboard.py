"""The loop timeline page: built from cycle records, opened in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dashboards.timeline import timeline_html

CHROMIUM = shutil.which("chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def cycle(run_id: str, day: int, rate: float, outcome: str = "no retrain needed", action: str = "none") -> dict:
    key = "quality/thumbs_up_rate"
    return {
        "run_id": run_id, "start": 1_780_000_000_000 + day * 86_400_000, "tags": {"driftloop.outcome": outcome},
        "summary": {"outcome": outcome, "decision_action": action, "regression": ["thumbs_up_rate fell"],
                    "gate_reasons": ["golden: pass"]},
        "monitor_metrics": {key: rate, f"{key}/ci_low": rate - 0.03, f"{key}/ci_high": rate + 0.03,
                            f"{key}/topic:billing": rate - 0.2},
        "monitor_params": {"current_end": f"2026-11-{day + 1:02d}T00:00:00+00:00"},
    }


HISTORY = [
    cycle("r1", 1, 0.85),
    cycle("r2", 2, 0.48, "promoted version 2", "retrain"),
    cycle("r3", 3, 0.84),
    cycle("r4", 4, 0.50, "rejected version 3", "retrain"),
    cycle("r5", 5, 0.45, "promoted version 4", "retrain"),
]


def test_page_holds_every_trace_and_link():
    html = timeline_html(HISTORY, {"thumbs_up_rate": 0.7}, "http://mlflow:5000", "7", segment_field="topic")
    html = html.replace("\\u002f", "/")  # plotly escapes "/" in its JSON
    assert html.count("http://mlflow:5000/#/experiments/7/runs/r2") >= 2  # metric point and event marker
    assert '"name":"promotion"' in html and '"name":"rejection"' in html
    assert "floor 0.70" in html
    assert "topic=billing" in html


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it where apt-get works)")
def test_page_renders_in_headless_chromium_without_console_errors(tmp_path):
    page = tmp_path / "timeline.html"
    page.write_text(timeline_html(HISTORY, {"thumbs_up_rate": 0.7}, "http://mlflow:5000", "7", "topic"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'u'}",
             "--virtual-time-budget=5000"]
    dom = subprocess.run([CHROMIUM, *flags, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert "<title>driftloop timeline: 2 promotions</title>" in dom.stdout
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "page.as_uri" not in line]
    assert not [line for line in console if "Error" in line or "error" in line], console
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "timeline.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1200,700", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000
