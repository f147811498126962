"""Event-driven retrain in process: with `policy.retrain_via: event` the loop stops at
`triggered` and emits one `driftloop.regression.detected`, however many cycles see the
regression within the cooldown; the `retrain` flow then finishes that cycle (fine-tune,
gate, promotion, cooldown) under the cycle's MLflow run, and a second run finds nothing to do.

Real components: the demo model, lm-eval, MLflow on SQLite, the SQLite store, and Prefect's
test harness, whose API stores the emitted events (read back over HTTP)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from driftloop.app.validate import _prefect
from driftloop.core.config import load_config
from driftloop.core.errors import ConfigError
from driftloop.store import Store
from driftloop.tracking import Tracker

REPO = Path(__file__).resolve().parents[1]

EVENT = "driftloop.regression.detected"


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


def _events(resource: str, name: str = EVENT) -> list[dict]:
    from prefect.settings import PREFECT_API_URL

    body = {"filter": {"event": {"name": [name]}, "any_resource": {"id": [resource]}}, "limit": 50}
    r = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body, timeout=30)
    r.raise_for_status()
    return r.json()["events"]


def _flush(project: str) -> None:
    """Wait until the API has stored everything emitted so far: emit a sentinel for another
    resource and wait for it (the events worker sends, and the server persists, in order)."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    sentinel = f"driftloop.test.{project}.sentinel"
    emit_event("driftloop.test.sentinel", resource={"prefect.resource.id": sentinel})
    EventsWorker.drain_all()
    deadline = time.monotonic() + 60
    while not _events(sentinel, "driftloop.test.sentinel"):
        assert time.monotonic() < deadline, "the sentinel event was never stored"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def triggered(tmp_path_factory, demo_model, prefect_harness, e2e_config):
    """Two loop cycles in event mode on a day of regressed feedback (cooldown 1 h)."""
    from driftloop.demo.world import simulate
    from flows.common import StageParams
    from flows.loop import loop

    tmp = tmp_path_factory.mktemp("events")
    project = f"ev{uuid.uuid4().hex[:8]}"
    path = e2e_config(tmp, demo_model)
    text = path.read_text().replace("project: e2e", f"project: {project}")
    path.write_text(text.replace("policy: {", "policy: {retrain_via: event, cooldown_hours: 1, "))
    (tmp / "feedback").mkdir()
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=8)
    import json

    # 7 baseline days then the shifted day, at once: the first cycle already sees the regression.
    with (tmp / "feedback" / "all.jsonl").open("w") as f:
        for e in simulate(seed=0, start=start):
            f.write(json.dumps(e) + "\n")
    params = StageParams(config=str(path))
    first = loop(params)
    second = loop(params)
    _flush(project)
    return path, project, first, second


@pytest.mark.slow
def test_event_mode_stops_at_triggered_and_emits_once_across_two_cycles(triggered):
    path, project, first, second = triggered
    cfg = load_config(path)
    assert first.decision_action == "retrain", first.decision_reasons
    assert first.outcome == "retrain requested (event driftloop.regression.detected)"
    assert second.outcome != first.outcome and "retrain" not in second.stage_notes
    st = Store(cfg.store_url).get_state(project)
    assert st["state"] == "triggered"
    assert st["data"]["pending"]["run_id"] == first.run_id
    assert st["lease_owner"] == st["data"]["pending"]["owner"]  # kept for the retrain run, not released

    events = _events(f"driftloop.project.{project}")
    assert len(events) == 1
    payload = events[0]["payload"]
    assert payload["cycle_run_id"] == first.run_id and payload["champion_version"] == "1"
    assert payload["config"] == str(path) and payload["reasons"] == first.decision_reasons
    assert first.stage_notes["retrain"] == f"requested by event {events[0]['id']}"

    # Nothing was fine-tuned in the loop itself.
    tr = Tracker.from_config(cfg)
    assert tr.alias_version("champion") == "1" and tr.alias_version("challenger") is None
    runs = tr.client.search_runs([tr.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{first.run_id}'")
    assert "retrain" not in {r.data.tags.get("driftloop.stage") for r in runs}


@pytest.mark.slow
def test_retrain_flow_finishes_the_triggered_cycle_then_finds_nothing_to_do(triggered):
    from flows.common import StageParams
    from flows.events import retrain_cycle

    path, project, first, _ = triggered
    cfg = load_config(path)
    done = retrain_cycle(StageParams(config=str(path)), cycle_run_id=first.run_id)
    assert done.outcome == "promoted version 2", done.gate_reasons
    assert done.run_id == first.run_id and done.decision_reasons == first.decision_reasons

    store = Store(cfg.store_url)
    st = store.get_state(project)
    assert st["state"] == "cooldown" and st["lease_owner"] is None and "pending" not in st["data"]
    path_ = [h["to_state"] for h in reversed(store.history(project, limit=20))]
    i = path_.index("triggered")
    assert path_[i:] == ["triggered", "retraining", "evaluating", "promoted", "cooldown"]

    # The cycle's MLflow run tells the whole story, as in the inline path.
    tr = Tracker.from_config(cfg)
    assert tr.alias_version("champion") == "2"
    cycle = tr.client.get_run(first.run_id)
    assert cycle.data.tags["driftloop.outcome"] == "promoted version 2"
    assert cycle.data.tags["driftloop.retrain_via"] == "event"
    assert cycle.data.tags["driftloop.gate.action"] == "promote"
    children = tr.client.search_runs([tr.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{first.run_id}'")
    assert {"retrain", "benchmark-2"} <= {r.data.tags.get("driftloop.stage") for r in children}

    again = retrain_cycle(StageParams(config=str(path)), cycle_run_id=first.run_id)
    assert again.outcome == "nothing to retrain: the loop is cooldown"
    assert sorted(str(v.version) for v in tr.client.search_model_versions(f"name = '{tr.model_name}'")) == ["1", "2"]


def test_retrain_via_defaults_to_inline_and_rejects_other_values(tmp_path):
    p = tmp_path / "driftloop.yaml"
    p.write_text("project: x\n")
    assert load_config(p).policy.retrain_via == "inline"
    p.write_text("project: x\npolicy: {retrain_via: kafka}\n")
    with pytest.raises(ConfigError, match="policy.retrain_via"):
        load_config(p)


def _cfg(tmp_path, policy: str):
    p = tmp_path / "driftloop.yaml"
    p.write_text(f"project: x\npolicy: {policy}\n")
    return load_config(p)


def test_validate_checks_the_automation_against_the_cooldown(tmp_path):
    ok = _prefect(REPO / "prefect.yaml", _cfg(tmp_path, "{retrain_via: event, cooldown_hours: 1}"))
    assert ok[-1] == "event-driven retrain: ok (1 automation(s) on driftloop.regression.detected)"
    assert "retrain/gpu" in ok[0] and "evaluate/on-demand" in ok[0]
    # The automation ignores a project's events for 3600 s after firing: a 0 h cooldown would lose triggers.
    with pytest.raises(ConfigError, match=r"triggers\.0\.within: 3600 s is longer than policy.cooldown_hours \(0 h"):
        _prefect(REPO / "prefect.yaml", _cfg(tmp_path, "{retrain_via: event, cooldown_hours: 0}"))
    # Inline mode needs no automation.
    assert len(_prefect(REPO / "prefect.yaml", _cfg(tmp_path, "{cooldown_hours: 0}"))) == 1


def _copy(tmp_path, edit) -> Path:
    doc = yaml.safe_load((REPO / "prefect.yaml").read_text())
    edit(doc)
    out = tmp_path / "prefect.yaml"
    out.write_text(yaml.safe_dump(doc))
    for name in ("flows", "driftloop", "evaluators", "retrain", "dashboards"):
        (tmp_path / name).symlink_to(REPO / name)
    return out


def test_validate_refuses_event_mode_without_an_automation(tmp_path):
    def drop_triggers(doc):
        for d in doc["deployments"]:
            d.pop("triggers", None)

    path = _copy(tmp_path, drop_triggers)
    with pytest.raises(
        ConfigError, match="retrain_via is 'event' but no deployment trigger expects driftloop.regression.detected"
    ):
        _prefect(path, _cfg(tmp_path, "{retrain_via: event, cooldown_hours: 1}"))


def test_validate_refuses_file_entrypoints_that_would_shadow_the_retrain_package(tmp_path):
    def file_form(doc):
        doc["deployments"][3]["entrypoint"] = "flows/loop.py:loop"

    with pytest.raises(
        ConfigError,
        match=r"deployments\.3\.entrypoint: 'flows/loop.py:loop' is a file path; "
        r"use the module form flows.loop:loop",
    ):
        _prefect(_copy(tmp_path, file_form))


def test_validate_names_a_trigger_parameter_the_flow_does_not_have(tmp_path):
    def typo(doc):
        gpu = next(d for d in doc["deployments"] if d["name"] == "gpu")
        gpu["triggers"][0]["parameters"]["cycle_run"] = "{{ event.payload.cycle_run_id }}"

    with pytest.raises(ConfigError, match=r"triggers\.0\.parameters: cycle_run not a parameter of flow 'retrain'"):
        _prefect(_copy(tmp_path, typo))


def test_a_trigger_nobody_acts_on_is_rearmed_once_its_lease_expires(tmp_path):
    from flows.common import StageParams, context
    from flows.events import retrain_cycle
    from flows.loop import _rearm

    p = tmp_path / "driftloop.yaml"
    p.write_text("project: lost\nstate_dir: state\npolicy: {retrain_via: event, cooldown_hours: 1}\n")
    ctx = context(StageParams(config=str(p)))
    # What a cycle leaves behind when it emits but no retrain run ever comes (no gpu worker).
    assert ctx.store.transition(
        "lost",
        "triggered",
        "breach",
        "cycle-a",
        lease_seconds=0.2,
        expected={"armed"},
        data={"pending": {"run_id": "r1", "owner": "cycle-a", "summary": {"cycle": "c"}}},
    )
    assert _rearm(ctx, "cycle-b")["state"] == "triggered"  # the lease still stands: left alone
    time.sleep(0.3)
    assert _rearm(ctx, "cycle-b")["state"] == "armed"  # expired: the next decision may trigger again
    late = retrain_cycle.fn(StageParams(config=str(p)), cycle_run_id="r1")
    assert late.outcome == "nothing to retrain: the loop is armed"
