"""The held-out preference suite: golden-side pairs, the 2-choice lm-eval task they become, the
reward margin, and the leakage guard (no pair's prompt, nor a near duplicate of it, ever trains)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from driftloop.core.config import GoldenConfig, TaskSpec, load_config
from driftloop.core.errors import InputError
from driftloop.core.types import SampleResults
from driftloop.demo.world import all_answers, thumbs_world
from driftloop.services.preference import pairs_from_feedback
from evaluators.golden import GOLDEN, TRAIN, exclude_near_duplicates, shingles, split_of
from evaluators.preference_task import PREFERENCE_TASK, reward_margin, write_preference_task
from retrain.curate import build_preference_set

CFG = GoldenConfig()


def _prompts(side: str, n: int) -> list[str]:
    """n distinct prompts whose hash puts them on `side` of the split."""
    out, k = [], 0
    while len(out) < n:
        p = f"question number {k} about my order"
        if split_of(p, {}, CFG) == side:
            out.append(p)
        k += 1
    return out


def _rated(prompt: str, response: str, up: bool, i: int) -> dict:
    return {"event_id": f"e{i:04d}", "prompt": prompt, "response": response, "thumbs_up": up, "rating": None}


def test_pairs_come_from_golden_side_thumbs_and_corrections_only():
    g1, g2, g3 = _prompts(GOLDEN, 3)
    (t1,) = _prompts(TRAIN, 1)
    rated = [
        _rated(g1, "the right answer.", True, 1),
        _rated(g1, "a wrong answer.", False, 2),
        _rated(t1, "the right answer.", True, 3),  # training side: never a suite item
        _rated(t1, "a wrong answer.", False, 4),
        _rated(g2, "only one reply.", False, 5),  # one reply: no pair
        _rated(g3, "same text.", True, 6),  # the same text rated both ways: quarantined
        _rated(g3, "same text.", False, 7),
    ]
    golden_items = [
        {
            "item_id": "c1",
            "prompt": g2,
            "answer": "the correction.",
            "response": "only one reply.",
            "source_event_id": "e9",
        }
    ]
    pairs, quarantined = pairs_from_feedback(rated, golden_items, {}, CFG)
    got = {(p["prompt"], p["chosen"], p["rejected"]) for p in pairs}
    assert got == {(g1, "the right answer.", "a wrong answer."), (g2, "the correction.", "only one reply.")}
    assert quarantined == 1
    assert len({p["item_id"] for p in pairs}) == 2
    # A stored split wins over the hash, as for the corrections: a training-side prompt filed golden is held out.
    from evaluators.golden import prompt_key

    pairs, _ = pairs_from_feedback(rated, [], {prompt_key(t1, CFG.salt): GOLDEN}, CFG)
    assert t1 in {p["prompt"] for p in pairs}


def test_written_task_is_a_two_choice_task_whose_label_is_the_chosen_reply(tmp_path: Path):
    pairs = [
        {"item_id": f"p{i}", "prompt": f"q{i}", "chosen": f"good {i}.", "rejected": f"bad {i}."} for i in range(40)
    ]
    task = write_preference_task(pairs, tmp_path)
    assert task.name == PREFERENCE_TASK and task.n == 40
    rows = [json.loads(line) for line in task.data_path.read_text().splitlines()]
    assert all(r["choices"][r["label"]] == f"good {r['id'][1:]}." for r in rows)
    assert all(len(r["choices"]) == 2 for r in rows)
    labels = [r["label"] for r in rows]
    assert 0 < sum(labels) < len(labels)  # the chosen reply's position varies
    body = yaml.safe_load(task.yaml_path.read_text())
    assert body["output_type"] == "multiple_choice" and body["task"] == PREFERENCE_TASK
    assert {m["metric"] for m in body["metric_list"]} == {"acc", "acc_norm"}
    assert body["metadata"]["task_hash"] == task.task_hash
    again = write_preference_task(list(reversed(pairs)), tmp_path / "again")
    assert again.task_hash == task.task_hash and again.data_path.read_bytes() == task.data_path.read_bytes()
    with pytest.raises(InputError, match="same text"):
        write_preference_task([{"item_id": "x", "prompt": "q", "chosen": "a.", "rejected": "a."}], tmp_path / "bad")
    with pytest.raises(InputError, match="no pair"):
        write_preference_task([], tmp_path / "none")


def test_reward_margin_is_the_mean_chosen_minus_rejected_log_probability_with_an_interval():
    lls = {"a": ([-1.0, -3.0], 0), "b": ([-5.0, -2.0], 1), "c": ([-4.0, -4.5], 0), "d": ([-2.0, -2.5], 1)}
    samples = SampleResults(
        task=PREFERENCE_TASK,
        model="m",
        metric="acc_norm",
        items={k: 1.0 for k in lls},
        detail={k: {"loglikelihoods": v, "label": lab} for k, (v, lab) in lls.items()},
    )
    m = reward_margin(samples)
    diffs = [2.0, 3.0, 0.5, -0.5]
    assert m is not None and m.name == f"{PREFERENCE_TASK}/reward_margin" and m.n == 4
    assert m.value == pytest.approx(sum(diffs) / 4)
    assert m.ci_low < m.value < m.ci_high
    # t(0.975, 3) = 3.182; sd of the diffs = 1.5546
    assert m.ci_high - m.value == pytest.approx(3.1824 * 1.5546 / 2, rel=1e-3)
    assert reward_margin(samples.model_copy(update={"detail": {}})) is None


def test_preference_tasks_default_to_the_length_normalised_win_rate_and_the_suite_is_a_default_target():
    assert TaskSpec(name=PREFERENCE_TASK, kind="preference").metric == "acc_norm"
    assert TaskSpec(name=PREFERENCE_TASK, kind="preference", metric="acc").metric == "acc"
    cfg = load_config(Path(__file__).parents[1] / "driftloop.yaml", check_files=False)
    assert cfg.benchmark.suites["preference"].role == "target"
    assert cfg.golden.min_preference_pairs == 10
    assert GoldenConfig().min_preference_pairs == 10
    with pytest.raises(ValueError):
        GoldenConfig(min_preference_pairs=0)


def test_no_golden_pair_prompt_nor_a_near_duplicate_of_one_trains():
    """The thumbs world's golden pairs against what `flows.retrain` lets train: the training side
    of the split, minus near duplicates of every held-out prompt (pairs' included)."""
    events = [{**e, "event_id": f"e{i:05d}"} for i, e in enumerate(thumbs_world(seed=0))]
    pairs, _ = pairs_from_feedback(events, [], {}, CFG)
    assert len(pairs) >= CFG.min_preference_pairs
    held = [p["prompt"] for p in pairs]
    train = [e for e in events if split_of(e["prompt"], {}, CFG) == TRAIN]
    train = exclude_near_duplicates(train, held, CFG.near_dup_jaccard)
    rows, manifest = build_preference_set(train, [])
    assert manifest["counts"]["dpo"] > 0 and manifest["counts"]["kto"] > 0
    trained = {r["prompt"] for r in rows}
    assert not trained & set(held)
    held_sh = [shingles(p) for p in held]
    for p in trained:
        s = shingles(p)
        assert all(len(s & h) / len(s | h) < CFG.near_dup_jaccard for h in held_sh), p
    # The suite measures what the world's shift is about: many pairs choose a billing answer.
    billing = set(all_answers(["billing"]))
    assert sum(p["chosen"] in billing for p in pairs) >= 10


@pytest.mark.parametrize(
    "retrain, message",
    [
        ("{beta: 0}", "retrain: Value error, beta: must be > 0, got 0.0"),
        ("{objective: ppo}", "retrain.objective: Input should be 'auto', 'sft', 'dpo', 'kto' or 'mixed'"),
    ],
)
def test_bad_preference_settings_are_one_line_and_exit_2(tmp_path, capsys, retrain, message):
    from driftloop.app.cli import main

    cfg = tmp_path / "driftloop.yaml"
    cfg.write_text(f"project: x\nretrain: {retrain}\n")
    assert main(["--config", str(cfg), "validate"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"driftloop: error: {cfg}: {message}"]
