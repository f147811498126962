"""The loop timeline page and the MLflow records behind it: a real MLflow store (temporary SQLite)
with cycles, gate verdicts from the real policy, promotions and a rollback made through
`Tracker.move_champion`; the page built by `driftloop dashboard` and opened in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dashboards.timeline import log_timeline, render_stats, timeline_html, timeline_rows
from driftloop.app.cli import main
from driftloop.core.config import PolicyConfig, load_config
from driftloop.core.gate import gate
from driftloop.core.types import SampleResults
from driftloop.tracking import Tracker

CHROMIUM = shutil.which("chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # ignored by git (.gitignore: tests/artifacts/)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=5000",
]
ROLES = {"golden": "target", "canary": "canary"}


def samples(model: str, golden_right: float, n: int = 200) -> dict[str, list[SampleResults]]:
    """Per-item results on two suites: golden (the first golden_right share right) and a canary at 90%."""
    golden = {f"g{i}": float(i < golden_right * n) for i in range(n)}
    canary = {f"c{i}": float(i < 0.9 * n) for i in range(n)}
    return {
        "golden": [SampleResults(task="golden", model=model, items=golden)],
        "canary": [SampleResults(task="canary", model=model, items=canary)],
    }


def _cycle(
    tr: Tracker,
    rate: float,
    outcome: str,
    action: str,
    challenger: str | None,
    serving: str,
    golden_right: float | None = None,
) -> str:
    """One cycle as the loop records it: cycle run, monitor child run, summary; a gate verdict when retraining."""
    run = tr.start_run("cycle", tags={"driftloop.kind": "cycle"})
    mon = tr.start_run("monitor", parent=run, tags={"driftloop.stage": "monitor"})
    end = datetime.now(UTC)
    tr.log_params(mon, {"current_start": (end - timedelta(seconds=0.2)).isoformat(), "current_end": end.isoformat()})
    key = "quality/thumbs_up_rate"
    tr.log_metrics(
        mon,
        {
            key: rate,
            f"{key}/ci_low": rate - 0.04,
            f"{key}/ci_high": rate + 0.04,
            f"{key}/topic:billing": rate - 0.2,
            "quality/mean_rating": rate - 0.05,
        },
    )
    tr.end_run(mon)
    summary = {
        "outcome": outcome,
        "decision_action": action,
        "champion_version": serving,
        "regression": [f"thumbs_up_rate {rate:.2f} below the floor 0.70"] if action == "retrain" else [],
    }
    if challenger:
        time.sleep(1.05)  # the gate decides seconds after the cycle starts; champion_history has whole seconds
        verdict = gate(samples(challenger, golden_right), samples(serving, 0.6), ROLES, PolicyConfig())
        assert verdict.action.value == ("promote" if outcome.startswith("promoted") else "reject")
        tr.log_decision(run, verdict, "gate")
        tr.record_gate(run, challenger, verdict)
        summary.update(
            challenger_version=challenger, gate_reasons=verdict.reasons, retrain_note=f"lora -> version {challenger}"
        )
        if verdict.action.value == "promote":
            tr.move_champion(challenger, by="gate", reason="; ".join(verdict.reasons), how="gate")
            summary["champion_version"] = challenger
    tr.set_tags(run, {"driftloop.outcome": outcome, "driftloop.decide.action": action})
    tr.log_dict(run, summary, "cycle_summary.json")
    tr.end_run(run)
    time.sleep(1.05)  # cycles and moves in distinct seconds, as in a real loop (champion_history has whole seconds)
    return run


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Five cycles: v2 and v4 promoted by the gate, v3 rejected, then a rollback to v2 by hand."""
    tmp = tmp_path_factory.mktemp("timeline")
    cfg_path = tmp / "driftloop.yaml"
    cfg_path.write_text("project: shop\nstate_dir: state\nmonitor: {segment_fields: [topic]}\n")
    cfg = load_config(cfg_path)
    tr = Tracker.from_config(cfg)
    model = tmp / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    versions = []
    for i in range(4):
        reg = tr.start_run(f"register-{i}")
        versions.append(tr.register_model(reg, model))
        tr.end_run(reg)
    assert versions == ["1", "2", "3", "4"]
    tr.move_champion("1", by="driftloop", reason="base model", how="initial")
    runs = [
        _cycle(tr, 0.85, "no retrain needed", "none", None, "1"),
        _cycle(tr, 0.55, "promoted version 2", "retrain", "2", "1", golden_right=0.8),
        _cycle(tr, 0.84, "no retrain needed", "none", None, "2"),
        _cycle(tr, 0.52, "rejected version 3", "retrain", "3", "2", golden_right=0.6),
        _cycle(tr, 0.50, "promoted version 4", "retrain", "4", "2", golden_right=0.8),
    ]
    tr.move_champion("2", by="alice", reason="v4 answers billing in English", how="rollback")
    runs.append(_cycle(tr, 0.83, "no retrain needed", "none", None, "2"))
    return cfg_path, cfg, tr, runs


def _page(recorded, tmp_path: Path) -> Path:
    cfg_path, _, _, _ = recorded
    out = tmp_path / "timeline.html"
    assert main(["--config", str(cfg_path), "dashboard", "--out", str(out), "--mlflow-url", "http://mlflow:5000"]) == 0
    return out


def test_rows_hold_every_loop_event_with_its_version_and_mlflow_run(recorded):
    _, _, tr, runs = recorded
    rows = timeline_rows(tr.cycle_history(), lambda r: f"L/{r}", tr.champion_history())
    events = [(r["event"], r["version"]) for r in rows]
    assert [e for e in events if e[0] in ("promotion", "rollback", "first champion")] == [
        ("first champion", "1"),
        ("promotion", "2"),
        ("promotion", "4"),
        ("rollback", "2"),
    ]
    assert [e for e in events if e[0].startswith("gate")] == [
        ("gate pass", "1"),
        ("gate fail", "2"),
        ("gate pass", "2"),
    ]
    assert sum(e[0] == "retrain triggered" for e in events) == sum(e[0] == "retrain" for e in events) == 3
    gate_fail = next(r for r in rows if r["event"] == "gate fail")
    assert gate_fail["run_id"] == runs[3] and gate_fail["link"] == f"L/{runs[3]}"
    assert "rejected version 3" in gate_fail["detail"] and "golden/golden/acc" in gate_fail["detail"]
    rollback = next(r for r in rows if r["event"] == "rollback")
    assert "4 -> 2 (rollback by alice): v4 answers billing in English" in rollback["detail"]


def test_cycle_history_holds_the_latest_cycles_oldest_first_with_their_monitor_figures(recorded):
    _, _, tr, runs = recorded
    full = tr.cycle_history()
    assert [c["run_id"] for c in full] == runs
    latest = tr.cycle_history(max_cycles=2)
    assert [c["run_id"] for c in latest] == runs[-2:] and latest == full[-2:]  # the newest, not the oldest
    assert all(c["monitor_metrics"] for c in full)


def test_dashboard_command_writes_the_page_with_links_floors_and_the_events_table(recorded, tmp_path, capsys):
    out = _page(recorded, tmp_path)
    assert capsys.readouterr().out.strip() == f"timeline of 6 cycles written to {out}"
    html = out.read_text()
    _, _, tr, runs = recorded
    assert not re.search(r"<script[^>]*\bsrc=", html)  # offline: plotly.js is inlined, nothing is fetched
    assert len(html) > 3_000_000  # plotly.js itself (~3.5 MB)
    for r in runs:  # each cycle: linked from its metric points and listed in the table
        assert f'href="http://mlflow:5000/#/experiments/{tr.experiment_id}/runs/{r}"' in html
    assert "floor thumbs_up_rate 0.70" in html and "floor mean_rating 0.60" in html
    assert "topic=billing" in html
    assert html.count("<tr><td>") == len(timeline_rows(tr.cycle_history(), str, tr.champion_history()))
    assert not list(tmp_path.glob(".*.tmp"))


def test_dashboard_command_names_an_unwritable_output(recorded, tmp_path, capsys):
    cfg_path = recorded[0]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--config", str(cfg_path), "dashboard", "--out", str(blocker / "t.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out {blocker / 't.html'}: cannot write the page" in err[0]


def test_each_cycle_can_log_the_page_as_an_artifact_of_its_run(recorded, tmp_path):
    _, cfg, tr, runs = recorded
    assert log_timeline(tr, cfg, runs[-1]) == "timeline.html"
    assert "timeline.html" in {a.path for a in tr.client.list_artifacts(runs[-1])}
    got = tr._mlflow.artifacts.download_artifacts(
        run_id=runs[-1], artifact_path="timeline.html", dst_path=str(tmp_path), tracking_uri=tr.uri
    )
    assert "loop timeline (6 cycles)" in Path(got).read_text()
    # A page that cannot be built never fails the cycle: it says why and returns None.
    assert log_timeline(tr, cfg, "no-such-run") is None


def test_gate_figures_are_on_the_cycle_run_and_the_registry_version(recorded):
    _, _, tr, runs = recorded
    v2 = tr.version_info("2")
    assert v2["description"].startswith("Promoted by the gate: golden/golden/acc: challenger 0.800 vs champion 0.600")
    assert v2["tags"]["driftloop.gate.verdict"] == "promote" and v2["tags"]["driftloop.cycle_run"] == runs[1]
    assert v2["tags"]["driftloop.gate.golden"].startswith("target golden/golden/acc: diff +0.200 [")
    assert "p=" in v2["tags"]["driftloop.gate.golden"] and v2["tags"]["driftloop.gate.golden"].endswith("pass")
    assert v2["tags"]["driftloop.gate.canary"].endswith("pass")
    assert v2["tags"]["driftloop.promotion"] == "rollback"  # the latest move that put it in place
    v3 = tr.version_info("3")
    assert v3["description"].startswith("Rejected by the gate: ")
    assert v3["tags"]["driftloop.gate.golden"].endswith("fail")
    metrics = tr.client.get_run(runs[1]).data.metrics
    assert metrics["gate/golden/diff"] == pytest.approx(0.2)
    assert metrics["gate/golden/ci_low"] > 0 and metrics["gate/golden/p_value"] < 0.05
    assert tr.client.get_run(runs[1]).data.tags["driftloop.challenger_version"] == "2"


def test_page_from_cycle_outcomes_alone_counts_their_promotions():
    """Without the champion history (an older store), promotions come from the cycles' outcomes, and a
    promoting cycle's window is put on the version it started with."""
    outcomes = [("none", "1"), ("promoted version 2", "2"), ("rejected version 3", "2"), ("promoted version 4", "4")]
    history = [
        {
            "run_id": f"r{i}",
            "start": 1_780_000_000_000 + i * 86_400_000,
            "tags": {},
            "summary": {"outcome": o, "decision_action": "retrain" if o != "none" else "none", "champion_version": v},
            "monitor_metrics": {},
            "monitor_params": {},
        }
        for i, (o, v) in enumerate(outcomes)
    ]
    for champions in (None, []):
        rows = timeline_rows(history, str, champions)
        assert [r["run_id"] for r in rows if r["event"] == "promotion"] == ["r1", "r3"]
        assert [r["version"] for r in rows if r["event"] == "cycle"] == ["1", "1", "2", "2"]
    assert '"name":"promotion"' in timeline_html(history, {}, "http://m", "1")


@pytest.mark.browser
@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it where apt-get works)"
)
def test_page_renders_in_headless_chromium_with_every_marker_drawn_and_no_console_errors(recorded, tmp_path):
    page = _page(recorded, tmp_path)
    flags = [*FLAGS, f"--user-data-dir={tmp_path / 'u'}"]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "<title>driftloop timeline: 2 promotions</title>" in dom.stdout
    stats = render_stats(dom.stdout)
    assert stats["markers"]["promotion"] == 2 and stats["markers"]["rollback"] == 1
    assert stats["markers"]["gate pass"] == 2 and stats["markers"]["gate fail"] == 1
    assert stats["markers"]["retrain triggered"] == 3
    assert stats["points"] == stats["linked"] > 0  # every drawn point carries its MLflow link
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "error" in line.lower()], console
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "timeline.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [CHROMIUM, *flags, "--window-size=1400,1100", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 20_000
    (ARTIFACTS / "timeline_stats.json").write_text(json.dumps(stats, indent=1))
