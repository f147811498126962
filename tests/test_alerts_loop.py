"""Alerts from the flows: a whole loop cycle with the webhook receiver down still completes and
leaves dead letters, which `driftloop alerts retry` then delivers; ingest quarantine over the
threshold fires `ingest.quarantine`. Real demo model, lm-eval, MLflow on SQLite, Prefect's harness."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alert_peers import SECRET, down_url, hook_factory  # noqa: F401 - hook_factory is a fixture (tests/ is on sys.path)

from driftloop.alerts import receiver as recipe
from driftloop.app.cli import main
from driftloop.core.config import load_config
from driftloop.store import Store, deadletter

# One torch thread: the shared 2-core machine runs other test processes beside this one.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

ALERTS = """
alerts:
  retries: 1
  backoff_seconds: 0
  backoff_jitter: false
  quarantine_threshold: {threshold}
  mlflow_ui_url: http://mlflow.test:5000
  webhooks:
    - {{name: ops, url: "{url}", format: json, secret_env: HOOK_SECRET}}
    - {{name: chat, url: "{url}", format: slack, secret_env: HOOK_SECRET}}
"""


def _write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_cycle_completes_with_the_receiver_down_and_retry_delivers(
    tmp_path, demo_model, prefect_harness, e2e_config, hook_factory, monkeypatch
):
    from driftloop.demo.world import simulate
    from flows.common import StageParams
    from flows.loop import loop

    monkeypatch.setenv("HOOK_SECRET", SECRET)
    # The baseline week and the shifted day at once: one cycle sees the billing regression and retrains.
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=8)
    _write_jsonl(simulate(seed=0, start=start), tmp_path / "feedback" / "demo.jsonl")
    _write_jsonl([{"ts": "not a time", "prompt": f"q{k}"} for k in range(12)], tmp_path / "feedback" / "bad.jsonl")
    down = down_url()
    cfg_path = e2e_config(tmp_path, demo_model, ALERTS.format(threshold=0.002, url=down))

    summary = loop(StageParams(config=str(cfg_path)))

    assert summary.decision_action == "retrain", summary.decision_reasons
    assert summary.outcome.startswith(("promoted version 2", "rejected version 2")), summary.outcome
    cfg = load_config(cfg_path)
    store = Store(cfg.store_url)
    rows = deadletter.pending(store)
    verdict = "candidate.promoted" if summary.outcome.startswith("promoted") else "candidate.rejected"
    expected = ["ingest.quarantine", "regression.detected", "retrain.started", "retrain.finished", verdict]
    # Every alert of the cycle, in order, dead-lettered once per webhook after 2 attempts each.
    assert [r["event_type"] for r in rows if r["webhook"] == "ops"] == expected
    assert [r["event_type"] for r in rows if r["webhook"] == "chat"] == expected
    assert all(r["attempts"] == 2 and r["last_error"].startswith("ConnectError") for r in rows)
    assert store.get_state("e2e")["state"] == "cooldown"

    # The receiver is up again (same webhook names, new address): retry delivers everything and marks it.
    hook = hook_factory()
    cfg_path.write_text(cfg_path.read_text().replace(down, hook.url))
    assert main(["--config", str(cfg_path), "alerts", "retry"]) == 0
    assert deadletter.pending(store) == [] and len(deadletter.rows(store, include_delivered=True)) == 10
    by_type = {}
    for headers, body, _ in hook.requests:
        assert recipe.verify(SECRET, headers, body)
        p = json.loads(body)
        if "type" in p:
            by_type[p["type"]] = p
    assert list(by_type) == expected
    regression = by_type["regression.detected"]
    assert regression["reasons"] == summary.decision_reasons and regression["cycle"] == summary.cycle
    assert regression["mlflow"]["run_id"] == summary.run_id
    assert regression["mlflow"]["url"].startswith("http://mlflow.test:5000/#/experiments/")
    assert by_type[verdict]["model"] == {"name": cfg.tracking.registered_model, "version": "2", "previous_version": "1"}
    assert by_type[verdict]["reasons"] == summary.gate_reasons
    assert by_type["retrain.finished"]["model"]["version"] == "2"
    q = by_type["ingest.quarantine"]
    assert q["data"]["quarantined"] == 12 and q["reasons"][0].startswith("12 of ")


def test_a_cycle_that_loses_the_loop_to_another_cycle_sends_no_regression_alert(
    tmp_path, demo_model, prefect_harness, e2e_config, hook_factory, monkeypatch
):
    from driftloop.demo.world import simulate
    from flows.common import StageParams
    from flows.loop import loop

    monkeypatch.setenv("HOOK_SECRET", SECRET)
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=8)
    _write_jsonl(simulate(seed=0, start=start), tmp_path / "feedback" / "demo.jsonl")
    hook = hook_factory()
    cfg_path = e2e_config(tmp_path, demo_model, ALERTS.format(threshold=0.5, url=hook.url))
    # Another cycle starts its retrain just before this one tries: a real begin_retrain under another owner.
    real = Store.begin_retrain

    def other_cycle_first(self, project, owner, *a, **kw):
        self.release(project, owner)
        assert real(self, project, "other-cycle", "breach", {}, 600)
        return real(self, project, owner, *a, **kw)

    monkeypatch.setattr(Store, "begin_retrain", other_cycle_first)
    summary = loop(StageParams(config=str(cfg_path)))
    assert summary.decision_action == "retrain", summary.decision_reasons
    assert summary.outcome.startswith("retrain not started: the loop is retraining"), summary.outcome
    assert "held by other-cycle" in summary.outcome
    assert hook.requests == []  # no alert at all: the other cycle sends regression.detected and the rest


def test_ingest_quarantine_alert_respects_the_threshold(tmp_path, prefect_harness, hook_factory, monkeypatch):
    from flows.common import StageParams
    from flows.ingest import ingest

    monkeypatch.setenv("HOOK_SECRET", SECRET)
    hook = hook_factory()
    good = [
        {"ts": f"2026-11-0{1 + k % 5}T10:00:00+00:00", "prompt": f"question {k}", "response": "a", "rating": 4}
        for k in range(7)
    ]
    _write_jsonl(good + [{"ts": "yesterday", "prompt": "x"}] * 3, tmp_path / "feedback" / "f.jsonl")
    for threshold, sent in ((0.5, 0), (0.25, 2)):  # 3 of 10 quarantined = 0.3
        folder = tmp_path / f"t{threshold}"
        (folder / "feedback").mkdir(parents=True)
        (folder / "feedback" / "f.jsonl").write_text((tmp_path / "feedback" / "f.jsonl").read_text())
        (folder / "driftloop.yaml").write_text(
            "project: q\nstate_dir: st\nsources: [{path: feedback/*.jsonl}]\n"
            + ALERTS.format(threshold=threshold, url=hook.url)
        )
        before = len(hook.requests)
        summary = ingest(StageParams(config=str(folder / "driftloop.yaml")))
        assert (summary["accepted"], summary["quarantined"]) == (7, 3)
        assert len(hook.requests) - before == sent
    generic = next(json.loads(b) for _, b, _ in hook.requests if "type" in json.loads(b))
    assert generic["type"] == "ingest.quarantine"
    assert generic["data"] == {"read": 10, "accepted": 7, "duplicates": 0, "quarantined": 3, "quarantined_share": 0.3}
    assert generic["reasons"][0] == "3 of 10 rows quarantined (30.0% > alerts.quarantine_threshold 25.0%)"
    assert "yesterday" not in json.dumps(generic)  # reasons name the field and problem, never the value


def test_a_failed_fine_tune_alerts_started_then_failed(
    tmp_path, make_tiny_gpt2, prefect_harness, e2e_config, hook_factory, monkeypatch
):
    """The shared retrain tail (inline loop and event-driven deployment) reports a crashed fine-tune."""
    from driftloop.core.errors import StageError
    from driftloop.core.loopstate import LoopMemory
    from flows.common import StageParams, context
    from flows.loop import CycleSummary, _Clock, finish_retrain
    from flows.registry import ensure_champion

    monkeypatch.setenv("HOOK_SECRET", SECRET)
    hook = hook_factory()
    # An impossible spec (no example fits in 8 tokens) makes the fine-tune fail fast.
    cfg_path = e2e_config(
        tmp_path, make_tiny_gpt2(), "retrain: {max_length: 8}" + ALERTS.format(threshold=0.5, url=hook.url)
    )
    _write_jsonl([], tmp_path / "feedback" / "none.jsonl")
    params = StageParams(config=str(cfg_path))
    assert ensure_champion(params) == "1"
    ctx = context(params)
    ctx.store.add_items(
        [
            {
                "item_id": f"t{k}",
                "prompt_key": f"k{k}",
                "split": "train",
                "answer": "track it online.",
                "prompt": f"where is my order number {k}, it has been a week",
            }
            for k in range(6)
        ]
    )
    assert ctx.store.begin_retrain("e2e", "cycle-test", "test", {}, 600)
    summary = CycleSummary(
        cycle="20261126-000000-test",
        run_id=ctx.tracker.start_run("cycle-test"),
        champion_version="1",
        decision_reasons=["thumbs-up rate fell"],
    )
    with pytest.raises(StageError):
        finish_retrain(
            ctx,
            "cycle-test",
            StageParams(config=params.config, parent_run_id=summary.run_id),
            summary,
            _Clock(summary),
            None,
            LoopMemory(),
            None,
        )
    got = [json.loads(b) for _, b, _ in hook.requests if "type" in json.loads(b)]
    assert [(p["type"], p["model"]["version"], p["cycle"]) for p in got] == [
        ("retrain.started", "1", summary.cycle),
        ("retrain.failed", "1", summary.cycle),
    ]
    assert got[0]["reasons"] == ["thumbs-up rate fell"]
    assert "longer than max_length=8" in got[1]["reasons"][0]
    assert ctx.store.get_state("e2e")["state"] == "cooldown"
