"""A world with thumbs but no corrections: the loop finds the regression and, with nothing to
train on, records the decision, alerts, cools down and exits 0 (real model, lm-eval, MLflow)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from driftloop.cli import main
from driftloop.config import load_config
from driftloop.demo.world import simulate
from driftloop.store import Store
from driftloop.tracking import Tracker

pytestmark = pytest.mark.slow


def _write(events: list[dict], path) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


def test_thumbs_only_regression_is_a_recorded_decision_not_a_crash(tmp_path, demo_model, prefect_harness,
                                                                   e2e_config, capsys):
    cfg_path = e2e_config(tmp_path, demo_model)
    (tmp_path / "feedback").mkdir()
    start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=8)
    events = [{k: v for k, v in e.items() if k != "correction"} for e in simulate(seed=0, start=start)]
    cut = start + timedelta(days=7)
    _write([e for e in events if datetime.fromisoformat(e["ts"]) < cut], tmp_path / "feedback" / "a.jsonl")
    assert main(["--config", str(cfg_path), "loop"]) == 0
    _write([e for e in events if datetime.fromisoformat(e["ts"]) >= cut], tmp_path / "feedback" / "b.jsonl")
    capsys.readouterr()
    assert main(["--config", str(cfg_path), "loop"]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert "regression; nothing to train on: 0 corrections in the training pool, need 1" in out.out

    cfg = load_config(cfg_path)
    store = Store(cfg.store_url)
    st = store.get_state("e2e")
    assert st["state"] == "cooldown"
    path = [h["to_state"] for h in reversed(store.history("e2e", limit=20))]
    assert path[-3:] == ["triggered", "retraining", "cooldown"]
    assert st["data"]["answered"]["outcome"] == "nothing to train on"
    tr = Tracker.from_config(cfg)
    assert tr.alias_version("champion") == "1" and tr.alias_version("challenger") is None
    cycle = tr.client.search_runs([tr.experiment_id], filter_string="tags.`driftloop.kind` = 'cycle'",
                                  order_by=["attributes.start_time DESC"], max_results=1)[0]
    assert cycle.info.status == "FINISHED"
    assert cycle.data.tags["driftloop.retrain.action"] == "alert"
    decision = tr.read_json(cycle.info.run_id, "decision_retrain.json")
    assert decision["findings"][0]["kind"] == "nothing_to_train"
    assert decision["findings"][0]["detail"] == {"corrections": 0, "needed": 1}

    # The next cycle on the same feedback (cooldown_hours is 0 here) does not try again: the
    # breach was answered, and it waits for new feedback.
    capsys.readouterr()
    assert main(["--config", str(cfg_path), "loop"]) == 0
    assert "already answered" in capsys.readouterr().out
    path = [h["to_state"] for h in reversed(store.history("e2e", limit=20))]
    assert path.count("triggered") == 1 and store.get_state("e2e")["state"] == "armed"
