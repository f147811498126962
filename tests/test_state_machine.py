"""The loop's state machine between cycles, the `status` and `plan` commands, and
the MLflow record of each decision (real store, real MLflow on a temp SQLite)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from driftloop.app.cli import main
from driftloop.core.config import load_config
from driftloop.core.types import Action, Decision, MetricResult
from driftloop.store import Store
from driftloop.tracking import Tracker


def test_rearm_leaves_cooldown_only_after_it_has_elapsed(store):
    assert store.transition("p", "cooldown", "after promoted version 2", "A", 0, data={"retrains": ["t"]})
    st = store.rearm("p", "B", cooldown_seconds=3600)
    assert st["state"] == "cooldown"
    assert not store.begin_retrain("p", "B", "breach", st["data"], 30)
    st = store.rearm("p", "B", cooldown_seconds=0)
    assert (st["state"], st["reason"], st["lease_owner"]) == ("armed", "cooldown elapsed", None)
    assert st["data"] == {"retrains": ["t"]}
    assert store.begin_retrain("p", "B", "breach", st["data"], 30)
    assert store.get_state("p")["state"] == "retraining"


def test_a_cycle_never_writes_over_data_newer_than_it_read(store):
    seen = store.get_state("p")  # cycle X reads, then spends minutes benchmarking
    assert store.begin_retrain("p", "Y", "breach", {"retrains": ["t1"]}, 0.05)  # Y retrains meanwhile...
    assert store.transition("p", "armed", "done", "Y", 0, data={"retrains": ["t1"]})  # ...and is armed again
    assert not store.transition(
        "p", "armed", "no action", "X", expected={"armed"}, data={}, expected_version=seen["version"]
    )
    assert not store.begin_retrain("p", "X", "breach", {}, 30, expected_version=seen["version"])
    assert store.get_state("p")["data"] == {"retrains": ["t1"]}  # Y's retrain still counts against the budget


def test_rearm_leaves_a_live_holder_alone_and_finishes_a_stranded_verdict(store):
    assert store.begin_retrain("p", "A", "breach", {}, 30)
    assert store.transition("p", "evaluating", "challenger version 3", "A", 30)
    assert store.rearm("p", "B", 0)["state"] == "evaluating"  # A is alive
    assert store.transition("p", "promoted", "promoted version 3", "A", 0.05, expected={"evaluating"})
    time.sleep(0.1)  # A died after promoting, before cooldown
    st = store.rearm("p", "B", 0)
    # The gate's verdict stands: on to cooldown, not back to armed (which would retrain again at once).
    assert st["state"] == "cooldown" and "lease of A in state promoted expired" in st["reason"]


def _config(tmp_path: Path) -> Path:
    p = tmp_path / "driftloop.yaml"
    p.write_text("project: sm\nstate_dir: state\npolicy: {alpha: 0.05, lease_seconds: 120}\n")
    return p


def test_status_shows_state_since_why_lease_and_history(tmp_path, capsys):
    cfg_path = _config(tmp_path)
    cfg = load_config(cfg_path)
    assert cfg.policy.lease_seconds == 120
    assert main(["--config", str(cfg_path), "status"]) == 0
    assert "no store yet" in capsys.readouterr().out
    store = Store(cfg.store_url)
    store.migrate()
    assert store.begin_retrain("sm", "cycle-ab12", "thumbs_up_rate below the floor 0.70", {}, 120)
    store.close()
    assert main(["--config", str(cfg_path), "status", "--history", "5"]) == 0
    out = capsys.readouterr().out
    assert "state: retraining since" in out and "why: retrain started" in out
    assert "lease: held by cycle-ab12 until" in out
    assert "armed" in out and "triggered" in out and "thumbs_up_rate below the floor" in out
    assert main(["--config", str(cfg_path), "status", "--history", "-1"]) == 2


def test_plan_prints_the_exact_size_and_power_table(tmp_path, capsys):
    cfg_path = _config(tmp_path)
    assert main(["--config", str(cfg_path), "plan", "--drop", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "one-sided exact McNemar" in out and "398 golden items" in out
    assert "398 (recommended)" in out
    assert main(["--config", str(cfg_path), "plan", "--drop", "0.3", "--discordant", "0.2"]) == 2


def test_each_decision_is_logged_with_action_tags_and_a_json_artifact(tmp_path):
    tr = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "t", "m", str(tmp_path / "artifacts"))
    run = tr.start_run("cycle")
    d = Decision(
        action=Action.RETRAIN,
        policy_version="7",
        reasons=["thumbs_up_rate is 0.55 [0.52, 0.59] (n=800)"],
        evidence=[MetricResult(name="thumbs_up_rate", value=0.55, n=800, source="quality", passed=False)],
    )
    tr.log_decision(run, d, "decide")
    tags = tr.client.get_run(run).data.tags
    assert tags["driftloop.decide.action"] == "retrain" and tags["driftloop.policy_version"] == "7"
    assert tags["driftloop.decide.reason"].startswith("thumbs_up_rate is 0.55")
    local = tr.client.download_artifacts(run, "decision_decide.json", str(tmp_path))
    logged = json.loads(Path(local).read_text())
    assert Decision(**logged) == d


def test_a_cycle_that_lost_its_lease_stops_before_acting(tmp_path):
    # The loop flow's own helpers: a cycle whose lease expired mid-retrain (another cycle
    # recovered and started its own retrain) must not move the state, let alone the alias.
    from driftloop.core.errors import StageError
    from driftloop.core.loopstate import Event, LoopMemory, State
    from flows.common import StageParams, context
    from flows.loop import _rearm, _step

    ctx = context(StageParams(config=str(_config(tmp_path))))
    assert ctx.store.begin_retrain("sm", "slow", "breach", {"breaches": [True]}, 0.05)
    time.sleep(0.1)
    st = _rearm(ctx, "fresh")
    assert st["state"] == "armed" and st["data"] == {"breaches": [True]}
    assert ctx.store.begin_retrain("sm", "fresh", "breach", st["data"], 120)
    with pytest.raises(StageError, match="the state is retraining held by fresh.*lease_seconds=120"):
        _step(ctx, "slow", State.RETRAINING, Event.CANDIDATE, "challenger version 2", LoopMemory())
    st = ctx.store.get_state("sm")
    assert (st["state"], st["lease_owner"]) == ("retraining", "fresh")
