"""Lineage in MLflow: a retrain's training set is a dataset input of its run, and
`driftloop lineage VERSION` names the feedback events (and their sources) behind every item."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from driftloop.app.cli import main
from driftloop.core.config import load_config
from driftloop.core.types import FeedbackEvent
from driftloop.store import Store
from driftloop.tracking import Tracker


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def retrained(tmp_path_factory, make_tiny_gpt2, e2e_config):
    """A retrain of a tiny base on 6 corrections from two sources (2 steps): (config path, version)."""
    from flows.common import StageParams, plain_calls
    from flows.registry import ensure_champion
    from flows.retrain import retrain

    root = tmp_path_factory.mktemp("lineage")
    (root / "feedback").mkdir()
    (root / "feedback" / "none.jsonl").write_text("")
    params = StageParams(config=str(e2e_config(root, make_tiny_gpt2(), "retrain: {max_steps: 2}")))
    cfg = load_config(params.config)
    store = Store(cfg.store_url)
    store.migrate()
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    for k in range(6):
        ev = FeedbackEvent(
            event_id=f"e{k}",
            ts=t0 + timedelta(minutes=k),
            prompt=f"where is my order number {k}, it has been a week",
            response="no idea",
            thumbs_up=False,
            correction="track it online.",
        )
        store.add_events([ev], source="feedback/day1.jsonl" if k < 4 else "api")
    store.add_items(
        [
            {
                "item_id": f"t{k}",
                "prompt_key": f"where is order {k}",
                "split": "train",
                "prompt": f"where is my order number {k}, it has been a week",
                "answer": "track it online.",
                "source_event_id": f"e{k}",
            }
            for k in range(6)
        ]
    )
    with plain_calls():
        ensure_champion(params)
        res = retrain(params)
    return params.config, cfg, res


def test_training_set_is_a_dataset_input_and_the_model_is_stored_once(retrained):
    _, cfg, res = retrained
    tr = Tracker.from_config(cfg)
    [ds] = [d for d in tr.run_datasets(res.run_id) if d.context == "training"]
    manifest = tr.read_json(res.run_id, "data_manifest.json")
    assert ds.name == "training-set" and ds.digest == manifest["digest"] and ds.rows == manifest["counts"]["train"]
    run_files = {a.path for a in tr.client.list_artifacts(res.run_id, "job")}
    assert "job/model" not in run_files and "job/manifest.json" in run_files
    assert not Path(res.output_dir, "model").exists()  # the registry's copy is the only one
    assert tr.alias_version("challenger") == res.version
    assert tr.version_info(res.version)["tags"]["driftloop.status"] == "candidate"


def test_lineage_prints_the_manifest_events_and_their_sources(retrained, capsys):
    config, cfg, res = retrained
    capsys.readouterr()
    assert main(["--config", config, "lineage", res.version, "--json"]) == 0
    lin = json.loads(capsys.readouterr().out)
    manifest = Tracker.from_config(cfg).read_json(res.run_id, "data_manifest.json")
    printed = {e["event_id"] for i in lin["items"] for e in i["events"]}
    assert printed == {e for ids in manifest["sources"].values() for e in ids} == {f"e{k}" for k in range(6)}
    where = {e["event_id"]: e["source"] for i in lin["items"] for e in i["events"]}
    assert where == {f"e{k}": "feedback/day1.jsonl" if k < 4 else "api" for k in range(6)}
    assert lin["run_id"] == res.run_id and lin["base_version"] == "1" and lin["origin"] == "retrain"
    assert [d["name"] for d in lin["datasets"]] == ["training-set"]

    assert main(["--config", config, "lineage", "challenger"]) == 0
    out = capsys.readouterr().out
    assert "6 training items from 6 feedback events" in out and "e4 (api)" in out

    assert main(["--config", config, "lineage", "99"]) == 2
    assert "version '99': no such version" in capsys.readouterr().err


def test_the_canary_and_golden_task_data_with_their_task_hashes(tmp_path):
    from driftloop.core.config_eval import TaskSpec
    from evaluators.benchmark import TASKS_DIR
    from evaluators.task_data import task_data
    from evaluators.taskfiles import task_hash

    plan = [("canary", TaskSpec(name="driftloop_canary", limit=8)), ("bbq", TaskSpec(name="bbq", kind="builtin"))]
    [canary] = task_data(plan, [TASKS_DIR])  # a hub task's data is lm-eval's: not listed
    lines = (TASKS_DIR / "canary.jsonl").read_text().splitlines()
    assert canary.path == str(TASKS_DIR / "canary.jsonl") and len(canary.rows) == len([x for x in lines if x.strip()])
    assert canary.digest == task_hash(TASKS_DIR / "driftloop_canary.yaml")
    assert canary.rows[0]["id"] == json.loads(lines[0])["id"]


def test_logging_a_dataset_with_integer_columns_prints_no_mlflow_schema_hint(tmp_path):
    """MLflow hints that integer columns cannot hold missing values when it infers a dataset's
    schema; that is about model signatures, and it used to fill the loop's output once per dataset."""
    import warnings

    import pandas as pd

    from driftloop.tracking import Tracker
    from driftloop.tracking.datasets import StoreSource, log_dataset

    tr = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "t", "m", str(tmp_path / "artifacts"))
    run_id = tr.client.create_run(tr.experiment_id).info.run_id
    frame = pd.DataFrame({"event_id": ["a", "b"], "rating": [4, 5], "thumbs_up": [1, 0]})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        digest = log_dataset(
            tr, run_id, [], "window", "monitoring", StoreSource("feedback", "all"), "ab" * 32, frame=frame
        )
    assert not [w for w in seen if "Inferred schema" in str(w.message)], [str(w.message)[:80] for w in seen]
    logged = tr.client.get_run(run_id).inputs.dataset_inputs
    assert [d.dataset.digest for d in logged] == [digest] and "rating" in logged[0].dataset.schema
