"""A world with thumbs but no corrections (real model, lm-eval, MLflow): with `retrain.objective:
auto` the loop trains on the thumbs (DPO where one prompt got opposite thumbs, else KTO) and the
gate decides on the held-out preference suite (the golden side's pairs); with `sft`, nothing to
train on is a recorded decision, an alert and a cooldown, exit 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from driftloop.app.cli import main
from driftloop.core.config import load_config
from driftloop.demo.world import thumbs_world
from driftloop.store import Store
from driftloop.tracking import Tracker

pytestmark = pytest.mark.slow


def _write(events: list[dict], path) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


def _thumbs_world(tmp_path, demo_model, e2e_config, extra: str = ""):
    """Seven baseline days and one shifted day of the demo's thumbs-only world (no correction; some
    users ask again after a wrong reply and rate both); the first cycle runs on the baseline.
    Returns the config path."""
    cfg_path = e2e_config(tmp_path, demo_model, extra)
    (tmp_path / "feedback").mkdir()
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=8)
    events = [{k: v for k, v in e.items() if k != "correction"} for e in thumbs_world(seed=0, start=start)]
    cut = start + timedelta(days=7)
    _write([e for e in events if datetime.fromisoformat(e["ts"]) < cut], tmp_path / "feedback" / "a.jsonl")
    assert main(["--config", str(cfg_path), "loop"]) == 0
    _write([e for e in events if datetime.fromisoformat(e["ts"]) >= cut], tmp_path / "feedback" / "b.jsonl")
    return cfg_path


def _latest_cycle(tr: Tracker):
    return tr.client.search_runs(
        [tr.experiment_id],
        filter_string="tags.`driftloop.kind` = 'cycle'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]


def _loop_process(cfg_path, env) -> subprocess.CompletedProcess:
    """`driftloop loop` as a user runs it, in its own process."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "driftloop"), "--config", str(cfg_path), "loop"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


def test_thumbs_train_a_preference_objective_and_the_gate_decides_on_the_preference_suite(
    tmp_path, demo_model, prefect_harness, e2e_config
):
    cfg_path = _thumbs_world(tmp_path, demo_model, e2e_config)
    assert main(["--config", str(cfg_path), "loop"]) == 0
    cfg = load_config(cfg_path)
    tr = Tracker.from_config(cfg)
    cycle = _latest_cycle(tr)
    summary = tr.read_json(cycle.info.run_id, "cycle_summary.json")
    assert summary["decision_action"] == "retrain"
    # Prompts asked again after a wrong reply got opposite thumbs: auto trains DPO on those pairs,
    # with replay of the champion's training data as SFT rows against forgetting (objective mixed).
    assert summary["retrain_note"].startswith("lora mixed on "), summary["retrain_note"]
    assert summary["retrain_objective"] == "mixed" and summary["retrain_counts"]["sft"] == 0
    assert summary["retrain_counts"]["dpo"] > 0 and summary["retrain_counts"]["kto"] > 0
    assert summary["challenger_version"] == "2"
    # No golden corrections, but golden-side pairs: the preference suite is the target suite.
    findings = summary["gate_findings"]
    kinds = {f["kind"] for f in findings}
    assert "no_target_suite" not in kinds, summary["gate_reasons"]
    pref = [f for f in findings if f["metric"] == "preference/driftloop_preference/acc_norm"]
    assert len(pref) == 1 and pref[0]["kind"] == "gain" and pref[0]["role"] == "target", findings
    f = pref[0]
    assert f["n"] >= cfg.policy.min_n and f["ci_low"] <= f["estimate"] <= f["ci_high"]
    assert f["estimate"] == pytest.approx(f["challenger"] - f["reference"])
    print(
        f"preference suite: win rate {f['reference']:.3f} -> {f['challenger']:.3f}, gain {f['estimate']:+.3f} "
        f"[{f['ci_low']:+.3f}, {f['ci_high']:+.3f}], n={f['n']}, p={f['p_value']:.3g}; {summary['outcome']}"
    )
    # The verdict follows the findings: promoted iff every finding passed, and the alias with it.
    promoted = all(x["passed"] for x in findings)
    assert summary["outcome"] == ("promoted version 2" if promoted else "rejected version 2"), summary["gate_reasons"]
    assert tr.alias_version("champion") == ("2" if promoted else "1")
    # The suite's items never trained: no prompt of the training data is a prompt of the suite.
    (data,) = (tmp_path / "state" / "retrain").glob("*/data.jsonl")
    trained = [json.loads(line) for line in data.read_text().splitlines()]
    suite = tmp_path / "state" / "tasks" / "preference" / "driftloop_preference.jsonl"
    held = {json.loads(line)["prompt"] for line in suite.read_text().splitlines()}
    assert len(held) == f["n"] and {r["objective"] for r in trained} == {"dpo", "sft"}
    assert sum(r["objective"] == "dpo" for r in trained) == summary["retrain_counts"]["dpo"]
    assert not {r["prompt"] for r in trained} & held


def test_thumbs_only_regression_is_a_recorded_decision_not_a_crash(tmp_path, demo_model, prefect_harness, e2e_config):
    cfg_path = _thumbs_world(tmp_path, demo_model, e2e_config, "retrain: {objective: sft}")
    # The command as a user runs it, in its own process: exit 0, the verdict on one line, no traceback.
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    proc = _loop_process(cfg_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "outcome: regression; nothing to train on: 0 corrections in the training pool, need 1" in proc.stdout
    cfg = load_config(cfg_path)
    store = Store(cfg.store_url)
    st = store.get_state("e2e")
    assert st["state"] == "cooldown"
    path = [h["to_state"] for h in reversed(store.history("e2e", limit=20))]
    assert path[-3:] == ["triggered", "retraining", "cooldown"]
    assert st["data"]["answered"]["outcome"] == "nothing to train on"
    tr = Tracker.from_config(cfg)
    assert tr.alias_version("champion") == "1" and tr.alias_version("challenger") is None
    cycle = _latest_cycle(tr)
    assert cycle.info.status == "FINISHED"
    assert cycle.data.tags["driftloop.retrain.action"] == "alert"
    decision = tr.read_json(cycle.info.run_id, "decision_retrain.json")
    assert decision["findings"][0]["kind"] == "nothing_to_train"
    assert decision["findings"][0]["detail"] == {"corrections": 0, "needed": 1}

    # The next cycle on the same feedback (cooldown_hours is 0 here) does not try again: the
    # breach was answered, and it waits for new feedback.
    proc = _loop_process(cfg_path, env)
    assert proc.returncode == 0 and "already answered" in proc.stdout, proc.stdout[-2000:]
    path = [h["to_state"] for h in reversed(store.history("e2e", limit=20))]
    assert path.count("triggered") == 1 and store.get_state("e2e")["state"] == "armed"


def test_demo_with_thumbs_only_names_objective_counts_and_the_preference_verdict(
    tmp_path, demo_model, prefect_harness, e2e_config, capsys
):
    """`driftloop demo --feedback thumbs` (on the demo model already built): its closing table
    names the objective, the rows per objective and the gate's verdict with the win rate."""
    cfg_path = e2e_config(tmp_path, demo_model)
    assert main(["--config", str(cfg_path), "demo", "--feedback", "thumbs"]) == 0
    out = capsys.readouterr().out
    print(out[out.index("driftloop demo: what happened") :])
    text = " ".join(out.split())  # the table wraps long cells over lines
    assert "objective │ mixed (training rows the feedback gave: sft 0, dpo " in text, text[-3000:]
    assert "preference win rate │ champion 0." in text and "(95% Wilson), n=" in text
    cfg = load_config(cfg_path)
    tr = Tracker.from_config(cfg)
    summary = tr.read_json(_latest_cycle(tr).info.run_id, "cycle_summary.json")
    verdict = summary["outcome"]
    assert verdict in ("promoted version 2", "rejected version 2")
    assert f"decision │ {verdict}; champion -> version {tr.alias_version('champion')}" in text
    assert "no_target_suite" not in {f["kind"] for f in summary["gate_findings"]}
    assert summary["retrain_counts"]["sft"] == 0 and summary["retrain_counts"]["dpo"] > 0
