"""The whole loop, end to end, with real components: the demo model, lm-eval,
MLflow on a temporary SQLite store, Prefect's test harness, the SQLite store."""

from __future__ import annotations

import json

import pytest

from driftloop.app.cli import main
from driftloop.core.config import load_config
from driftloop.store import Store
from driftloop.tracking import Tracker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, demo_model, prefect_harness, e2e_config):
    """One demo run (two cycles) shared by the tests below; they only read its state,
    except the last one, which runs a further cycle."""
    from flows.demo import run_demo

    tmp = tmp_path_factory.mktemp("e2e")
    cfg_path = e2e_config(tmp, demo_model)
    return cfg_path, run_demo(str(cfg_path))


def test_demo_loop_promotes_the_challenger(demo_run):
    cfg_path, (first, second) = demo_run

    assert first.decision_action == "none", first.decision_reasons
    assert first.outcome == "no retrain needed"
    assert second.decision_action == "retrain"
    assert any("topic=billing" in r and "below the floor" in r for r in second.regression), second.regression
    assert second.outcome == "promoted version 2", second.gate_reasons
    rows = {g["suite"]: g for g in second.gate_table}
    assert rows["golden"]["passed"] and rows["golden"]["diff"] > 0.2
    assert rows["canary"]["passed"] and rows["canary"]["ci_low"] > -0.05

    cfg = load_config(cfg_path)
    tr = Tracker.from_config(cfg)
    assert tr.alias_version("champion") == "2"
    assert tr.alias_version("challenger") is None  # it named the candidate only while under evaluation
    info = tr.version_info("2")
    assert info["tags"]["driftloop.status"] == "promoted"
    # The champion is an MLflow Model: pyfunc loads it from the registry and it answers in text.
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(cfg.tracking_uri)
    served = mlflow.pyfunc.load_model(f"models:/{tr.model_name}@champion")
    [answer] = served.predict(pd.DataFrame({"prompt": ["How do I reset my password?"]}), params={"max_new_tokens": 16})
    assert isinstance(answer, str) and answer.strip()
    assert info["tags"]["driftloop.base_version"] == "1"
    assert info["description"].startswith("Promoted by the gate")
    # The gate's figures per suite on the version, for the MLflow UI's "why is it the champion?".
    assert info["tags"]["driftloop.gate.verdict"] == "promote"
    assert {k for k in info["tags"] if k.startswith("driftloop.gate.")} >= {
        "driftloop.gate.golden",
        "driftloop.gate.canary",
    }

    # One parent run per cycle with a nested run per stage; the decision is logged with its reasons.
    runs = tr.client.search_runs([tr.experiment_id], filter_string=f"attributes.run_id = '{second.run_id}'")
    parent = runs[0]
    assert parent.data.tags["driftloop.decide.action"] == "retrain"
    assert parent.data.tags["driftloop.gate.action"] == "promote"
    children = tr.client.search_runs([tr.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{second.run_id}'")
    stages = {r.data.tags.get("driftloop.stage") for r in children}
    assert {"ingest", "monitor", "benchmark-champion", "retrain", "benchmark-2"} <= stages
    monitor_run = next(r for r in children if r.data.tags.get("driftloop.stage") == "monitor")
    arts = {a.path for a in tr.client.list_artifacts(monitor_run.info.run_id)}
    assert "drift_report.html" in arts
    # Each cycle logs the loop timeline page on its own run.
    assert "timeline.html" in {a.path for a in tr.client.list_artifacts(second.run_id)}

    # The loop's state went round the state machine and is back in cooldown.
    store = Store(cfg.store_url)
    assert store.get_state("e2e")["state"] == "cooldown"
    path = [h["to_state"] for h in reversed(store.history("e2e", limit=20))]
    i = path.index("triggered")
    assert path[i : i + 5] == ["triggered", "retraining", "evaluating", "promoted", "cooldown"]

    # Leakage safety on the real run: nothing the challenger trained on is golden.
    golden = {i["prompt_key"] for i in store.items("golden")}
    trained = {i["prompt_key"] for i in store.items("train")}
    assert golden and not golden & trained
    manifest = json.loads(next((cfg.state_path / "retrain").glob("*/result/manifest.json")).read_text())
    assert manifest["ids"] and not set(manifest["ids"]) & {i["item_id"] for i in store.items("golden")}


def test_cli_tables_and_status(demo_run, capsys):
    from driftloop.app import report

    cfg_path, summaries = demo_run
    report.demo_table(summaries, load_config(cfg_path))
    out = capsys.readouterr().out
    assert "regression found" in out and "champion -> version 2" in out and "mlflow ui" in out
    assert main(["--config", str(cfg_path), "status"]) == 0
    out = capsys.readouterr().out
    assert "state: cooldown" in out and "champion: version 2" in out


def test_rerun_on_the_same_data_adds_nothing_and_reuses_the_cache(demo_run):
    from flows.common import StageParams
    from flows.loop import loop

    cfg_path, _ = demo_run
    again = loop(StageParams(config=str(cfg_path)))
    assert again.stage_notes["ingest"].startswith("0 accepted")
    # The champion (version 2) was benchmarked on these exact tasks during the gate: all cached
    # (the preference suite's reward margin is derived from its cached per-item log-likelihoods).
    notes = again.stage_notes["benchmark champion"].split(", ")
    assert {n.split(":")[0] for n in notes} == {"golden", "preference", "canary"}, notes
    assert all(n.endswith("cached") for n in notes if "/reward_margin=" not in n), notes


def test_after_a_promotion_unchanged_feedback_never_triggers_again(demo_run, capsys):
    """The feedback that led to version 2 was served by version 1: it never counts against version 2,
    so three more cycles on it neither retrain nor spend the budget."""
    from flows.common import StageParams
    from flows.loop import loop

    cfg_path, _ = demo_run
    cfg = load_config(cfg_path)
    store = Store(cfg.store_url)
    before = [h["to_state"] for h in store.history("e2e", limit=200)].count("triggered")
    for _ in range(3):
        s = loop(StageParams(config=str(cfg_path)))
        assert s.decision_action != "retrain", s.decision_reasons
        assert s.stage_notes["monitor"].startswith("0 current"), s.stage_notes["monitor"]
        assert "champion version 2" in s.stage_notes["monitor"]
    assert [h["to_state"] for h in store.history("e2e", limit=200)].count("triggered") == before == 1
    assert Tracker.from_config(cfg).alias_version("champion") == "2"
    assert main(["--config", str(cfg_path), "status"]) == 0
    assert "current window counts: champion version 2's traffic" in capsys.readouterr().out
