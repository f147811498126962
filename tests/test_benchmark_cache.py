"""The benchmark result cache: keys, fingerprints, storage round trips, and hits that never load the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from driftloop.core.config import TaskSpec
from driftloop.core.errors import InputError
from driftloop.core.types import MetricResult, SampleResults
from evaluators.benchmark import TASKS_DIR, task_hash
from evaluators.cache import cache_key, evaluate_cached, load_cached, model_fingerprint, save_cached, spec_hash

CANARY = TaskSpec(name="driftloop_canary", limit=8)


BASE = dict(fingerprint="f" * 64, thash="t" * 64, spec=TaskSpec(name="x", limit=10), lm_eval_version="0.4.13", seed=0)


@pytest.mark.parametrize(
    "change",
    [
        {"fingerprint": "g" * 64},
        {"thash": "u" * 64},
        {"lm_eval_version": "0.4.14"},
        {"spec": TaskSpec(name="x", limit=11)},
        {"spec": TaskSpec(name="x", limit=10, num_fewshot=1)},
        {"spec": TaskSpec(name="x", limit=10, metric="acc_norm")},
        {"seed": 1},
    ],
)
def test_each_part_of_the_key_changes_it(change: dict) -> None:
    assert cache_key(**BASE) == cache_key(**BASE)
    assert cache_key(**{**BASE, **change}) != cache_key(**BASE)


def test_model_fingerprint_follows_the_weights_and_registry_versions_read_no_file(tmp_path: Path) -> None:
    m = tmp_path / "m"
    m.mkdir()
    (m / "config.json").write_text("{}")
    (m / "model.safetensors").write_bytes(b"\x00" * 64)
    (m / "notes.md").write_text("not part of the model")
    before = model_fingerprint(m)
    (m / "notes.md").write_text("edited")
    assert model_fingerprint(m) == before
    (m / "model.safetensors").write_bytes(b"\x00" * 63 + b"\x01")
    assert model_fingerprint(m) != before
    gone = tmp_path / "gone"  # a registry version is identified by version and artifact source
    assert model_fingerprint(gone, "3", "models:/m/3") == model_fingerprint(gone, "3", "models:/m/3")
    assert model_fingerprint(gone, "3", "models:/m/3") != model_fingerprint(gone, "4", "models:/m/4")
    with pytest.raises(InputError, match=f"model path does not exist: {gone}"):
        model_fingerprint(gone)


def test_spec_hash_of_a_project_task_is_its_yaml_hash_and_unknown_names_get_suggestions() -> None:
    assert spec_hash(CANARY, [TASKS_DIR]) == task_hash(TASKS_DIR / "driftloop_canary.yaml")
    with pytest.raises(InputError, match="unknown task 'driftloop_canry'.*did you mean driftloop_canary"):
        spec_hash(TaskSpec(name="driftloop_canry"), [TASKS_DIR])
    with pytest.raises(InputError, match="unknown task 'bbq'.*built-in lm-eval task: set kind: builtin"):
        spec_hash(TaskSpec(name="bbq"), [TASKS_DIR])


def test_samples_and_aggregates_round_trip_through_the_store(store) -> None:
    s = SampleResults(
        task="t",
        model="v1",
        metric="acc",
        items={"a": 1.0, "b": 0.0},
        detail={
            "a": {"chosen": 2, "label": 2, "loglikelihoods": [-3.5, -2.25, -0.5]},
            "b": {"chosen": 0, "label": 1, "loglikelihoods": [-1.0, -4.0]},
        },
    )
    ms = [
        MetricResult(
            name="t/acc", value=0.5, ci_low=0.09, ci_high=0.91, n=2, source="benchmark", note="95% CI: Wilson score"
        ),
        MetricResult(name="t/amb_bias_score", value=-0.25, n=2, source="benchmark", higher_is_better=False),
    ]
    save_cached(store, "k1", s, ms)
    got, metrics = load_cached(store, "k1", "h")
    assert got.items == s.items and got.detail == s.detail and got.task_hash == "h"
    assert (got.task, got.model, got.metric) == ("t", "v1", "acc")
    assert [m.model_dump(exclude={"note"}) for m in metrics] == [m.model_dump(exclude={"note"}) for m in ms]
    assert {m.note for m in metrics} == {"cached"}
    assert load_cached(store, "k2") is None


@pytest.fixture
def model_copy(demo_model: Path, tmp_path: Path) -> Path:  # noqa: F811
    return Path(shutil.copytree(demo_model, tmp_path / "model"))


def test_unchanged_model_and_task_hit_without_the_model_and_changes_miss(
    model_copy: Path, tmp_path: Path, sqlite_store
) -> None:
    fp = model_fingerprint(model_copy)
    plan = [("canary", CANARY)]
    first, ran = evaluate_cached(sqlite_store, model_copy, fp, plan, [TASKS_DIR], model_id="v1", batch_size=8)
    assert ran is not None and not first[0].cached and len(first[0].samples.items) == 8
    assert first[0].metrics[0].name == "driftloop_canary/acc" and first[0].metrics[0].note.startswith("95% CI")

    # A changed model misses: its fingerprint is a different key.
    weights = next(model_copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    changed = model_fingerprint(model_copy)
    assert changed != fp
    assert load_cached(sqlite_store, cache_key(changed, spec_hash(CANARY, [TASKS_DIR]), CANARY)) is None
    assert load_cached(sqlite_store, cache_key(fp, spec_hash(CANARY, [TASKS_DIR]), CANARY)) is not None

    # The model is gone, so a hit proves it was not loaded.
    shutil.rmtree(model_copy)
    again, ran = evaluate_cached(sqlite_store, model_copy, fp, plan, [TASKS_DIR], model_id="v1", batch_size=8)
    assert ran is None and again[0].cached
    assert again[0].samples.items == first[0].samples.items and again[0].samples.detail == first[0].samples.detail
    assert [(m.name, m.value, m.ci_low, m.ci_high, m.n) for m in again[0].metrics] == [
        (m.name, m.value, m.ci_low, m.ci_high, m.n) for m in first[0].metrics
    ]
    assert {m.note for m in again[0].metrics} == {"cached"}

    # A changed task misses, so lm-eval must run and asks for the (missing) model.
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    shutil.copy(TASKS_DIR / "driftloop_canary.yaml", tasks)
    rows = (TASKS_DIR / "canary.jsonl").read_text().splitlines()
    first_row = json.loads(rows[0])
    rows[0] = json.dumps({**first_row, "prompt": first_row["prompt"] + " (edited)"})
    (tasks / "canary.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError, match=f"model path does not exist: {model_copy}"):
        evaluate_cached(sqlite_store, model_copy, fp, plan, [tasks], model_id="v1", batch_size=8)
    # So does another limit (part of the key) on the unchanged task.
    with pytest.raises(InputError, match="model path does not exist"):
        evaluate_cached(
            sqlite_store,
            model_copy,
            fp,
            [("canary", TaskSpec(name="driftloop_canary", limit=9))],
            [TASKS_DIR],
            model_id="v1",
            batch_size=8,
        )


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield
