"""The monitor flow with a judge: the current window judged, the figures logged to MLflow, the
`driftloop monitor` judge section, and `decide` on the flow's result (Prefect's harness, SQLite,
MLflow on SQLite; the `reference` backend, so no model)."""

from __future__ import annotations

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
                prompt=f"how do I switch to plan {i % 5}?",
                response=ideal if good else "please contact support",
                correction=ideal,
                thumbs_up=good if i % 10 == 0 else None,
                segment={"topic": ["billing", "account"][i % 2]},
            )
        )
    return out


def test_monitor_judges_the_current_window_and_decide_uses_the_estimate(tmp_path, prefect_harness):
    from flows.common import StageParams
    from flows.monitor import monitor

    cfg_path = tmp_path / "driftloop.yaml"
    cfg_path.write_text("""
project: judged
state_dir: state
monitor:
  segment_fields: [topic]
  windows: {current_days: 1, reference_days: 3}
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

    d_alone = decide(res.current, res.reference, [], cfg.policy)
    d_judged = decide(res.current, res.reference, [], cfg.policy, judged=res.judged)
    assert d_judged.action == Action.RETRAIN, d_judged.reasons
    assert d_alone.action == Action.NONE, d_alone.reasons  # 80 thumbs alone cannot tell

    tr = Tracker.from_config(cfg)
    metrics = tr.client.get_run(res.run_id).data.metrics
    assert metrics["quality/judge_kappa/judge:matches_ideal"] == cal.overall.kappa
    assert metrics["quality/thumbs_up_rate_ppi"] == est.value
    assert metrics["quality/thumbs_up_rate_ppi/ci_low"] == est.ci_low
    assert "quality/judge_kappa/judge:matches_ideal/topic:billing" in metrics
    arts = {a.path for a in tr.client.list_artifacts(res.run_id)}
    assert "metrics_judged.json" in arts

    # A second pass: every verdict from the cache.
    again = monitor(StageParams(config=str(cfg_path)))
    assert again.judges[0].calls == 0
    # `driftloop monitor` prints this table.
    from rich.console import Console

    from driftloop.app.commands.monitor import monitor_table

    console = Console(width=300, record=True)
    console.print(monitor_table(again))
    text = console.export_text()
    assert "judge matches_ideal: kappa" in text and "trusted" in text and "80+720" in text
