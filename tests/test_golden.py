"""The golden set: deterministic, stable, leakage-safe splits and the lm-eval task it becomes."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest
import yaml

from driftloop.core.config import GoldenConfig
from driftloop.core.errors import InputError
from driftloop.demo import world
from evaluators.golden import (
    GOLDEN,
    TRAIN,
    exclude_near_duplicates,
    normalise_prompt,
    prompt_key,
    shingles,
    split_corrections,
    write_golden_task,
)

CFG = GoldenConfig()


def _jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def _rows(events: list[dict]) -> list[dict]:
    return [{**e, "event_id": f"e{i}"} for i, e in enumerate(events) if e.get("correction")]


@pytest.fixture(scope="module")
def corrected() -> list[dict]:
    """Corrected feedback of the demo world: billing and base-topic corrections, many repeats."""
    return _rows(world.simulate(seed=0, per_day=400, shifted_per_day=1500))


def _row(prompt: str, correction: str = "use the link.", i: int = 0, response: str = "wrong.") -> dict:
    return {
        "event_id": f"r{i}",
        "prompt": prompt,
        "response": response,
        "correction": correction,
        "segment": {"topic": "account"},
    }


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("  How do I   reset\tmy PASSWORD?? ", "how do i reset my password"),
        ("...hello, world!", "hello, world"),
        ("Ｑuick question", "quick question"),  # full-width letter folds to ASCII (NFKC)
        ("", ""),
    ],
)
def test_normalise_prompt(raw: str, expected: str) -> None:
    assert normalise_prompt(raw) == expected


def test_prompt_key_ignores_case_spacing_and_end_punctuation_but_not_the_salt() -> None:
    assert prompt_key("Where is my laptop?", "s") == prompt_key("  where is my   laptop", "s")
    assert prompt_key("where is my laptop", "s") != prompt_key("where is my laptop", "t")
    assert prompt_key("where is my laptop", "s") != prompt_key("where is my phone", "s")
    assert len(prompt_key("x", "s")) == 64


def test_split_is_deterministic_and_independent_of_row_order(corrected: list[dict]) -> None:
    g1, t1 = split_corrections(corrected, {}, CFG)
    shuffled = corrected[:]
    random.Random(1).shuffle(shuffled)
    g2, t2 = split_corrections(shuffled, {}, CFG)
    assert {i["prompt_key"] for i in g1} == {i["prompt_key"] for i in g2}
    assert {i["item_id"] for i in g1} == {i["item_id"] for i in g2}
    assert g1 and t1


def test_golden_share_follows_holdout_fraction() -> None:
    rows = [_row(f"question number {i} about item {i * 7}", i=i) for i in range(3000)]
    golden, train = split_corrections(rows, {}, GoldenConfig(holdout_fraction=0.3, near_dup_jaccard=1.0))
    assert abs(len(golden) / 3000 - 0.3) < 0.03
    assert len(golden) + len(train) == 3000


def test_items_carry_the_documented_fields(corrected: list[dict]) -> None:
    golden, train = split_corrections(corrected, {}, CFG)
    item = (golden + train)[0]
    assert set(item) == {"item_id", "prompt_key", "split", "prompt", "answer", "response", "segment", "source_event_id"}
    src = next(r for r in corrected if r["event_id"] == item["source_event_id"])
    assert item["answer"] == src["correction"] and item["response"] == src["response"]
    assert item["prompt_key"] == prompt_key(src["prompt"], CFG.salt)
    assert all(i["split"] == GOLDEN for i in golden) and all(i["split"] == TRAIN for i in train)


def test_exact_duplicate_prompts_dedupe_to_the_first_row() -> None:
    rows = [
        _row("Where is my laptop?", "first.", 0),
        _row("where is my   LAPTOP", "second.", 1),
        _row("how do i delete my account", "third.", 2),
    ]
    split = split_corrections(rows, {}, GoldenConfig(near_dup_jaccard=1.0))
    items = split.golden + split.train
    assert len(items) == 2 and split.duplicates == 1
    assert {i["answer"] for i in items} == {"first.", "third."}


def test_item_id_is_stable_and_depends_on_the_correction() -> None:
    a = split_corrections([_row("where is my laptop", "x.")], {}, CFG)
    b = split_corrections([_row("Where is my laptop?", "x.", i=9)], {}, CFG)
    c = split_corrections([_row("where is my laptop", "y.")], {}, CFG)
    ida, idb, idc = [(s.golden + s.train)[0]["item_id"] for s in (a, b, c)]
    assert ida == idb != idc


def test_existing_golden_stays_golden_when_new_feedback_arrives(corrected: list[dict]) -> None:
    half = len(corrected) // 2
    first = split_corrections(corrected[:half], {}, CFG)
    existing = {i["prompt_key"]: i["split"] for i in first.golden + first.train}
    # More feedback arrives, and someone even lowers the holdout fraction: assignments must not move.
    later = split_corrections(
        corrected, existing, GoldenConfig(holdout_fraction=0.01), golden_prompts=[i["prompt"] for i in first.golden]
    )
    later_split = {i["prompt_key"]: i["split"] for i in later.golden + later.train}
    for key in (i["prompt_key"] for i in first.golden):
        assert later_split[key] == GOLDEN
    # Existing train items stay train unless they are now near duplicates of golden ones.
    assert all(later_split.get(i["prompt_key"], TRAIN) == TRAIN for i in first.train)
    assert len(later.golden) >= len(first.golden)


def test_no_golden_prompt_or_near_duplicate_in_train(corrected: list[dict]) -> None:
    golden, train = split_corrections(corrected, {}, CFG)
    golden_keys = {i["prompt_key"] for i in golden}
    assert not golden_keys & {i["prompt_key"] for i in train}
    for t in train:
        worst = max(_jaccard(t["prompt"], g["prompt"]) for g in golden)
        assert worst < CFG.near_dup_jaccard, t["prompt"]


def test_constructed_near_duplicates_are_removed_from_train() -> None:
    gold = "hello, my refund for the laptop has not arrived on my card yet"
    near = "Hello, my refund for the laptop has not arrived on my card yet!!! thanks"  # J = 11/12
    same_words_reordered = "my refund for the laptop has not arrived on my card yet, hello"  # J = 10/12
    far = "hello, how do i change the email address on my profile"
    rows = [_row(p, i=i) for i, p in enumerate([gold, near, same_words_reordered, far])]
    keys = [prompt_key(r["prompt"], CFG.salt) for r in rows]
    forced = {keys[0]: GOLDEN, keys[1]: TRAIN, keys[2]: TRAIN, keys[3]: TRAIN}
    assert _jaccard(gold, near) >= 0.8 and _jaccard(gold, same_words_reordered) >= 0.8
    split = split_corrections(rows, forced, CFG)
    assert [i["prompt"] for i in split.golden] == [gold]
    assert [i["prompt"] for i in split.train] == [far]
    assert split.near_duplicates == 2
    # A stricter threshold keeps the looser paraphrase.
    strict = split_corrections(rows, forced, GoldenConfig(near_dup_jaccard=0.85))
    assert {i["prompt"] for i in strict.train} == {same_words_reordered, far}


def test_golden_prompts_from_earlier_batches_also_exclude_train_items() -> None:
    earlier_golden = "why did you bill me two times for the phone"
    row = _row("why did you bill me two times for the phone please", i=1)
    forced = {prompt_key(row["prompt"], CFG.salt): TRAIN}
    assert split_corrections([row], forced, CFG).train  # alone, it is a training item
    split = split_corrections([row], forced, CFG, golden_prompts=[earlier_golden])
    assert split.train == [] and split.near_duplicates == 1


def test_stored_train_pool_can_be_refiltered_against_a_grown_golden_set(corrected: list[dict]) -> None:
    first = split_corrections(corrected[: len(corrected) // 2], {}, CFG)
    later = split_corrections(corrected, {i["prompt_key"]: i["split"] for i in first.golden + first.train}, CFG)
    golden_now = [i["prompt"] for i in later.golden]
    kept = exclude_near_duplicates(first.train, golden_now, CFG.near_dup_jaccard)
    assert len(kept) < len(first.train)  # some old training items resemble newer golden prompts
    for t in kept:
        assert max(_jaccard(t["prompt"], g) for g in golden_now) < CFG.near_dup_jaccard


def test_split_result_unpacks_as_a_pair_and_pickles(corrected: list[dict]) -> None:
    split = split_corrections(corrected, {}, CFG)
    golden, train = split
    back = pickle.loads(pickle.dumps(split))
    assert back.golden == golden and back.train == train and back.near_duplicates == split.near_duplicates


def test_split_scales_to_thousands_of_items() -> None:
    rng = random.Random(0)
    rows = []
    for i in range(20000):  # templated prompts share many shingles: the all-pairs worst case
        t = rng.choice(list(world.INTENTS))
        intent = rng.choice(list(world.INTENTS[t]))
        rows.append(_row(f"{world.make_question(rng, t, intent)} order {i}", world.answer_for(t, intent), i))
    golden, train = split_corrections(rows, {}, CFG)
    # Speed is a benchmark matter (about 1 s here for 20,000 rows, where all-pairs would take
    # minutes); this test checks only that the indexed path handles the size correctly.
    assert len(golden) + len(train) <= 20000 and golden and train


# ------------------------------------------------------------------ the lm-eval task


@pytest.fixture(scope="module")
def golden_items(corrected: list[dict]) -> list[dict]:
    return split_corrections(corrected, {}, CFG).golden


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_written_task_has_one_mc_item_per_golden_item(golden_items: list[dict], tmp_path: Path) -> None:
    task = write_golden_task(golden_items, tmp_path, num_choices=4)
    docs = _read_jsonl(task.data_path)
    by_id = {i["item_id"]: i for i in golden_items}
    assert task.name == "driftloop_golden" and task.n == len(docs) == len(golden_items)
    assert {d["id"] for d in docs} == set(by_id)
    for d in docs:
        assert len(d["choices"]) == 4 and len(set(d["choices"])) == 4
        assert d["choices"][d["label"]] == by_id[d["id"]]["answer"]
        assert d["choices"].count(by_id[d["id"]]["answer"]) == 1
        assert d["prompt"] == by_id[d["id"]]["prompt"]
    assert len({d["label"] for d in docs}) > 1  # the correct answer is not always in one place


def test_written_yaml_is_an_mc_task_pointing_at_the_data(golden_items: list[dict], tmp_path: Path) -> None:
    task = write_golden_task(golden_items, tmp_path / "g", num_choices=3)
    cfg = yaml.safe_load(task.yaml_path.read_text())
    assert cfg["task"] == "driftloop_golden" and cfg["output_type"] == "multiple_choice"
    assert cfg["dataset_path"] == "json" and cfg["test_split"] == "test"
    assert Path(cfg["dataset_kwargs"]["data_files"]["test"]) == task.data_path and task.data_path.is_absolute()
    assert cfg["doc_to_text"] == "Q: {{prompt}}\nA:"
    assert cfg["doc_to_choice"] == "{{choices}}" and cfg["doc_to_target"] == "{{label}}"
    assert cfg["metric_list"] == [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]
    assert cfg["metadata"]["task_hash"] == task.task_hash


def test_written_task_is_byte_identical_for_the_same_items(golden_items: list[dict], tmp_path: Path) -> None:
    a = write_golden_task(golden_items, tmp_path / "a", num_choices=4)
    b = write_golden_task(list(reversed(golden_items)), tmp_path / "b", num_choices=4)
    assert a.data_path.read_bytes() == b.data_path.read_bytes()
    assert a.task_hash == b.task_hash  # the folder is not part of the content


def test_task_hash_changes_when_content_changes(golden_items: list[dict], tmp_path: Path) -> None:
    base = write_golden_task(golden_items, tmp_path, num_choices=4).task_hash
    edited = [dict(golden_items[0], answer="a brand new correction.")] + golden_items[1:]
    assert write_golden_task(edited, tmp_path, num_choices=4).task_hash != base
    assert write_golden_task(golden_items[1:], tmp_path, num_choices=4).task_hash != base
    assert write_golden_task(golden_items, tmp_path, num_choices=3).task_hash != base
    assert write_golden_task(golden_items, tmp_path, num_choices=4, seed=1).task_hash != base
    assert write_golden_task(golden_items, tmp_path, num_choices=4).task_hash == base


def test_too_few_distinct_answers_fall_back_to_the_bad_response(tmp_path: Path) -> None:
    items = split_corrections(
        [
            _row("where is my laptop", "track it on the orders page.", 0, response="bad one."),
            _row("how do i delete my account", "use the help page.", 1, response="bad two."),
        ],
        {},
        GoldenConfig(holdout_fraction=0.99),
    ).golden
    task = write_golden_task(items, tmp_path, num_choices=4)
    docs = {d["id"]: d for d in _read_jsonl(task.data_path)}
    for it in items:
        choices = docs[it["item_id"]]["choices"]
        assert sorted(choices) == sorted({it["answer"], it["response"], *(o["answer"] for o in items)})


def test_a_set_without_any_distractor_is_an_input_error(tmp_path: Path) -> None:
    items = split_corrections(
        [_row("where is my laptop", "same.", response="same.")], {}, GoldenConfig(holdout_fraction=0.99)
    ).golden
    with pytest.raises(InputError, match="no usable item"):
        write_golden_task(items, tmp_path, num_choices=4)
