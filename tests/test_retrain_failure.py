"""A fine-tuning job that fails (here: an impossible spec, max_length 8 drops every
example) leaves the `champion` alias where it was, registers nothing, records the error
on a FAILED `retrain` run in MLflow, and the loop goes to cooldown and re-arms."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.core.config import load_config
from driftloop.core.errors import StageError
from driftloop.store import Store
from driftloop.tracking import Tracker


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


# An impossible spec: no example fits in 8 tokens, so every fine-tune fails.
RETRAIN_FAILS = "retrain: {max_length: 8}"


@pytest.fixture(scope="module")
def tiny_base(make_tiny_gpt2) -> Path:
    return make_tiny_gpt2()


def _failed_retrain_runs(tr: Tracker):
    runs = tr.client.search_runs([tr.experiment_id], filter_string="tags.`driftloop.stage` = 'retrain'")
    return [r for r in runs if r.info.status == "FAILED"]


def test_failed_fine_tune_keeps_the_champion_and_is_recorded_in_mlflow(
    tmp_path, tiny_base, prefect_harness, e2e_config
):
    from flows.common import StageParams
    from flows.registry import ensure_champion
    from flows.retrain import retrain

    params = StageParams(config=str(e2e_config(tmp_path, tiny_base, RETRAIN_FAILS)))
    (tmp_path / "feedback").mkdir()
    (tmp_path / "feedback" / "none.jsonl").write_text("")  # the config names a source; retrain reads none
    assert ensure_champion(params) == "1"
    cfg = load_config(params.config)
    store = Store(cfg.store_url)
    store.add_items(
        [
            {
                "item_id": f"t{k}",
                "prompt_key": f"where is order {k}",
                "split": "train",
                "prompt": f"where is my order number {k}, it has been a week",
                "answer": "track it online.",
            }
            for k in range(6)
        ]
    )
    with pytest.raises(StageError, match=r"^retrain: fine-tuning failed: DataError: .*longer than max_length=8"):
        retrain(params)

    tr = Tracker.from_config(cfg)
    assert tr.alias_version("champion") == "1" and tr.alias_version("challenger") is None
    assert [str(v.version) for v in tr.client.search_model_versions(f"name = '{tr.model_name}'")] == ["1"]
    failed = _failed_retrain_runs(tr)
    assert len(failed) == 1 and "longer than max_length=8" in failed[0].data.tags["driftloop.error"]
    assert not list((cfg.state_path / "retrain").glob("*/result"))  # no half-written result folder


@pytest.mark.slow
def test_loop_goes_to_cooldown_then_rearms_after_a_failed_retrain(tmp_path, demo_model, prefect_harness, e2e_config):
    from flows.common import StageParams
    from flows.demo import run_demo
    from flows.loop import loop

    cfg_path = e2e_config(tmp_path, demo_model, RETRAIN_FAILS)
    with pytest.raises(StageError, match="fine-tuning failed"):
        run_demo(str(cfg_path))  # cycle 1: nothing to do; cycle 2: regression -> retrain -> fails
    cfg = load_config(cfg_path)
    store, tr = Store(cfg.store_url), Tracker.from_config(cfg)
    assert store.get_state("e2e")["state"] == "cooldown"
    assert tr.alias_version("champion") == "1" and tr.alias_version("challenger") is None

    # cooldown_hours is 0: the next cycle re-arms, triggers again, and fails the same way.
    with pytest.raises(StageError, match="fine-tuning failed"):
        loop(StageParams(config=str(cfg_path)))
    path = [h["to_state"] for h in reversed(store.history("e2e", limit=50))]
    first = path.index("triggered")
    assert path[first : first + 7] == [
        "triggered",
        "retraining",
        "cooldown",
        "armed",
        "triggered",
        "retraining",
        "cooldown",
    ]
    assert tr.alias_version("champion") == "1"
    assert len(_failed_retrain_runs(tr)) == 2


def test_a_failed_retrain_that_lost_its_lease_leaves_the_new_holder_alone(
    tmp_path, tiny_base, prefect_harness, e2e_config
):
    """The retrain outlived its lease and another cycle took the loop over; when the fine-tune then
    fails, the state and the lease stay the other cycle's and the error says why."""
    import time

    from driftloop.core.loopstate import LoopMemory
    from flows.common import StageParams, context
    from flows.loop import CycleSummary, _Clock, finish_retrain
    from flows.registry import ensure_champion

    params = StageParams(config=str(e2e_config(tmp_path, tiny_base, RETRAIN_FAILS)))
    (tmp_path / "feedback").mkdir()
    (tmp_path / "feedback" / "none.jsonl").write_text("")
    assert ensure_champion(params) == "1"
    ctx = context(params)
    ctx.store.add_items(
        [
            {
                "item_id": f"t{k}",
                "prompt_key": f"where is order {k}",
                "split": "train",
                "prompt": f"where is my order number {k}, it has been a week",
                "answer": "track it.",
            }
            for k in range(6)
        ]
    )
    assert ctx.store.begin_retrain("e2e", "slow", "breach", {}, 0.05)
    time.sleep(0.1)  # slow's lease lapses; fresh recovers the loop and starts its own retrain
    assert ctx.store.rearm("e2e", "fresh", 0)["state"] == "armed"
    assert ctx.store.begin_retrain("e2e", "fresh", "breach", {}, 600)
    summary = CycleSummary(cycle="c", run_id=ctx.tracker.start_run("cycle-c"))
    with pytest.raises(StageError, match="another cycle took over.*fine-tuning failed"):
        finish_retrain(
            ctx,
            "slow",
            StageParams(config=params.config, parent_run_id=summary.run_id),
            summary,
            _Clock(summary),
            None,
            LoopMemory(),
            None,
        )
    st = ctx.store.get_state("e2e")
    assert (st["state"], st["lease_owner"]) == ("retraining", "fresh")
    assert summary.outcome == "retrain failed; the loop was taken over by another cycle"
