"""The monitor flow with a judge: the current and the reference window judged, the figures logged to
MLflow and the Evidently workspace, the `driftloop monitor` judge section, and the loop's `decide` on the
flow's result (Prefect's harness, SQLite, MLflow on SQLite; the `reference` backend, so no model)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from driftloop.core.config import load_config
from driftloop.core.policy import decide
from driftloop.core.types import Action, FeedbackEvent
from driftloop.store import Store
from driftloop.tracking import Tracker

pytestmark = pytest.mark.slow  # Prefect's harness and MLflow: about a minute on 2 cores

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def events(n: int, day0: float, rate: float, seed: int) -> list[FeedbackEvent]:
    """n events over one day from day0; a share `rate` repeat the ideal answer (good); a tenth carry thumbs."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        good = bool(rng.random() < rate)
        ideal = f"open billing, choose plan {i % 5} and confirm"
        out.append(
            FeedbackEvent(
                event_id=f"s{seed}-{i}",
                ts=T0 + timedelta(days=day0 + i / n),
                prompt=f"how do I switch to plan {i % 5}? (ticket {seed}-{i})",  # one verdict per event
                response=ideal if good else "please contact support",
                correction=ideal,
                thumbs_up=good if i % 10 == 0 else None,
                segment={"topic": ["billing", "account"][i % 2]},
            )
        )
    return out


def test_monitor_judges_both_windows_and_decide_uses_the_estimates(tmp_path, prefect_harness, monkeypatch):
    from driftloop.core.loopstate import LoopMemory
    from flows.common import StageParams
    from flows.loop import decide_task
    from flows.monitor import monitor

    cfg_path = tmp_path / "driftloop.yaml"
    cfg_path.write_text("""
project: judged
state_dir: state
monitor:
  segment_fields: [topic]
  windows: {current_days: 1, reference_days: 3}
  exact_rows: 1000  # the reference is profiled and cached: the second pass serves it from the profile cache
policy: {min_n: 30, floors: {}, max_drop: {thumbs_up_rate: 0.05}}
judges:
  - name: matches_ideal
    rubric: "{{ response }} / {{ correction }}{{ verdict }}"
    backend: {kind: reference}
    min_labels: 50
""")
    cfg = load_config(cfg_path)
    cfg.state_path.mkdir(parents=True)
    store = Store(cfg.store_url)
    store.migrate()
    for day in range(3):
        store.add_events(events(800, day, 0.85, seed=day), source="ref")
    store.add_events(events(800, 3, 0.70, seed=9), source="cur")  # 80 rated events, thumbs-up fell
    store.close()
    res = monitor(StageParams(config=str(cfg_path)))
    (cal,) = res.judges
    assert cal.judge == "matches_ideal" and cal.judged == 800 and cal.calls == 800 and cal.overall.n == 80
    assert res.judged is not None and res.judged.findings[0].kind == "judge_trusted"
    est = {m.label(): m for m in res.judged.estimates}["thumbs_up_rate"]
    human = {m.label(): m for m in res.current}["thumbs_up_rate"]
    assert est.n == human.n == 80 and est.n_judged == 720
    assert (est.ci_high - est.ci_low) < 0.6 * (human.ci_high - human.ci_low)
    # The reference window is judged too, within its own call budget (2,000 by default): rated events first.
    (rcal,) = res.reference_judges
    assert (rcal.judged, rcal.calls, rcal.over_budget, rcal.overall.n) == (2000, 2000, 400, 240)
    assert res.reference_judged is not None and res.reference_judged.findings[0].kind == "judge_trusted"
    ref_est = {m.label(): m for m in res.reference_judged.estimates}["thumbs_up_rate"]
    ref_human = {m.label(): m for m in res.reference}["thumbs_up_rate"]
    assert ref_est.n == ref_human.n == 240 and ref_est.n_judged == 1760 and ref_est.value != ref_human.value

    d_alone = decide(res.current, res.reference, [], cfg.policy)
    # The loop's decide step: the current window's estimate against the reference window's estimate.
    d_judged = decide_task.fn(StageParams(config=str(cfg_path)), res, LoopMemory(), [], [])
    assert d_judged.action == Action.RETRAIN, d_judged.reasons
    assert d_alone.action == Action.NONE, d_alone.reasons  # 80 thumbs alone cannot tell
    drop = next(f for f in d_judged.of_kind("drop") if not f.segment)
    assert (drop.estimate, drop.reference, drop.n_reference) == (est.value, ref_est.value, 240)

    tr = Tracker.from_config(cfg)
    metrics = tr.client.get_run(res.run_id).data.metrics
    assert metrics["quality/judge_kappa/judge:matches_ideal"] == cal.overall.kappa
    assert metrics["quality/thumbs_up_rate_ppi"] == est.value
    assert metrics["quality/thumbs_up_rate_ppi/ci_low"] == est.ci_low
    assert "quality/judge_kappa/judge:matches_ideal/topic:billing" in metrics
    arts = {a.path for a in tr.client.list_artifacts(res.run_id)}
    assert {"metrics_judged.json", "metrics_judged_reference.json"} <= arts
    # The Evidently snapshot carries the judge's figures, and the dashboard has the Judges tab.
    (snap,) = (cfg.state_path / "evidently").glob("*/snapshots/*.json")
    text = snap.read_text()
    assert '"judge_kappa"' in text and '"judge_kappa_low"' in text and '"thumbs_up_rate_ppi"' in text
    tabs = json.loads((snap.parents[1] / "dashboard.json").read_text())["tabs"]
    assert [len(t["panels"]) for t in tabs if t["title"] == "Judges"] == [2]

    # A second pass: every verdict from the cache; the reference, served from the profile cache, is
    # read again for the judge, which judges only the 400 events the budget left last time.
    again = monitor(StageParams(config=str(cfg_path)))
    assert again.reference_cached and again.judges[0].calls == 0
    assert (again.reference_judges[0].judged, again.reference_judges[0].calls) == (2400, 400)
    # A third: the unchanged reference, now judged within the budget, comes from the judged-window
    # store, and only the current window is read.
    reads = []
    read_window = Store.read_window
    monkeypatch.setattr(Store, "read_window", lambda self, a, b, f: reads.append(a) or read_window(self, a, b, f))
    third = monitor(StageParams(config=str(cfg_path)))
    assert reads == [datetime.fromisoformat(third.windows["current_start"])]
    assert third.reference_judges[0].calls == 0 and third.reference_judges[0].judged == 2400
    assert third.reference_judged == again.reference_judged
    # `driftloop monitor` prints this table.
    from rich.console import Console

    from driftloop.app.commands.monitor import monitor_table

    console = Console(width=300, record=True)
    console.print(monitor_table(again))
    text = console.export_text()
    assert "judge matches_ideal: kappa" in text and "trusted" in text and "80+720" in text
    # The reference column beside the used estimate: the reference window's own estimate.
    again_ref = {m.label(): m for m in again.reference_judged.estimates}["thumbs_up_rate"]
    row = next(line for line in text.splitlines() if "thumbs_up_rate (PPI++)" in line and "used" in line)
    assert f"{again_ref.value:.3f} [{again_ref.ci_low:.3f}" in row and "240+2160" not in row
