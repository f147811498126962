"""lm-eval benchmark runs on the real tiny demo model: canary, golden task, per-item results, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from driftloop.core.config import GoldenConfig, TaskSpec
from driftloop.core.errors import InputError
from driftloop.demo import world
from evaluators.benchmark import TASKS_DIR, make_task_manager, run_tasks, task_hash
from evaluators.golden import split_corrections, write_golden_task
from evaluators.tasks.make_canary import canary_jsonl

CANARY = TASKS_DIR / "driftloop_canary.yaml"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread while this module runs: on a shared 2-core box, two spinning
    OpenMP threads per process make a 120-item run ~10x slower (13 s instead of 1.3 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Bounded by steps, not seconds, so the model (and its canary score) does not depend
# on how busy the machine is: 120 steps take ~15 s on 2 idle cores; 60 steps score
# only ~0.6 on the canary, 100 and more score 1.0.


@pytest.fixture(scope="module")
def canary_run(demo_model: Path, tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    # From an unrelated working directory: the YAML's relative data path must still resolve.
    mp.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        return run_tasks(demo_model, [TaskSpec(name="driftloop_canary")], [TASKS_DIR], model_id="demo-v1")
    finally:
        mp.undo()


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    """A folder that passes the model-path check; the error tests fail before it is loaded."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    return tmp_path / "model"


def test_committed_canary_data_matches_its_generator() -> None:
    assert (TASKS_DIR / "canary.jsonl").read_text() == canary_jsonl()


def test_task_manager_indexes_only_the_given_folders() -> None:
    # Start-up time itself is measured in benchmarks/benchmark_suite.py, not here.
    tm = make_task_manager([TASKS_DIR])
    assert "driftloop_canary" in tm.all_tasks and "hellaswag" not in tm.all_tasks
    assert len(tm.all_tasks) < 50  # the ~14,000 built-in tasks are not indexed


def test_demo_model_is_well_above_chance_on_the_canary(canary_run) -> None:
    [metric] = canary_run.metrics
    assert metric.name == "driftloop_canary/acc" and metric.source == "benchmark" and metric.n == 120
    assert metric.value > 0.8  # chance is 0.25 with four choices
    assert metric.ci_low <= metric.value <= metric.ci_high


def test_canary_samples_are_keyed_by_the_jsonl_ids(canary_run) -> None:
    [s] = canary_run.samples
    assert s.task == "driftloop_canary" and s.model == "demo-v1" and s.metric == "acc"
    assert list(s.items) == _ids(TASKS_DIR / "canary.jsonl")
    assert s.mean == pytest.approx(canary_run.metrics[0].value)
    labels = {json.loads(line)["id"]: json.loads(line)["label"] for line in (TASKS_DIR / "canary.jsonl").open()}
    for iid, d in s.detail.items():
        assert d["label"] == labels[iid] and len(d["loglikelihoods"]) == 4
        assert s.items[iid] == (1.0 if d["chosen"] == d["label"] else 0.0)
        assert d["chosen"] == max(range(4), key=d["loglikelihoods"].__getitem__)


def test_canary_run_reports_hash_raw_results_and_time(canary_run) -> None:
    assert canary_run.samples[0].task_hash == task_hash(CANARY)
    raw = canary_run.raw
    assert "samples" not in raw and raw["results"]["driftloop_canary"]["acc,none"] == canary_run.metrics[0].value
    json.dumps(raw)  # serialisable as it is
    assert canary_run.seconds > 0


def test_canary_task_hash_follows_its_data(tmp_path: Path) -> None:
    shutil.copy(CANARY, tmp_path / CANARY.name)
    shutil.copy(TASKS_DIR / "canary.jsonl", tmp_path / "canary.jsonl")
    assert task_hash(tmp_path / CANARY.name) == task_hash(CANARY)
    with (tmp_path / "canary.jsonl").open("a") as f:
        f.write(json.dumps({"id": "x", "prompt": "p", "choices": ["a", "b"], "label": 0}) + "\n")
    assert task_hash(tmp_path / CANARY.name) != task_hash(CANARY)


def test_generated_golden_task_runs_with_per_task_limits(demo_model: Path, tmp_path: Path) -> None:
    rows = [
        {**e, "event_id": str(i)}
        for i, e in enumerate(world.simulate(seed=3, per_day=60, shifted_per_day=300))
        if e["correction"]
    ]
    golden, _ = split_corrections(rows, {}, GoldenConfig())
    task = write_golden_task(golden, tmp_path / "golden", num_choices=4)
    assert task.n >= 20
    out = run_tasks(
        demo_model,
        [TaskSpec(name="driftloop_golden", kind="golden"), TaskSpec(name="driftloop_canary", limit=10)],
        [TASKS_DIR, task.yaml_path.parent],
        batch_size=8,
    )
    by_task = {s.task: s for s in out.samples}
    assert list(by_task["driftloop_golden"].items) == _ids(task.data_path)
    assert by_task["driftloop_golden"].task_hash == task.task_hash
    assert list(by_task["driftloop_canary"].items) == _ids(TASKS_DIR / "canary.jsonl")[:10]
    names = {m.name: m for m in out.metrics}
    assert names["driftloop_golden/acc"].n == task.n and names["driftloop_canary/acc"].n == 10


def test_unknown_task_is_an_input_error_with_a_suggestion(fake_model: Path) -> None:
    with pytest.raises(InputError, match="unknown task 'driftloop_canry'.*did you mean driftloop_canary"):
        run_tasks(fake_model, [TaskSpec(name="driftloop_canry")], [TASKS_DIR])


def test_missing_model_path_is_an_input_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(InputError, match=f"model path does not exist: {missing}"):
        run_tasks(missing, [TaskSpec(name="driftloop_canary")], [TASKS_DIR])


def test_yaml_with_a_bad_field_is_an_input_error_naming_file_and_field(fake_model: Path, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    shutil.copy(TASKS_DIR / "canary.jsonl", tasks / "canary.jsonl")
    text = CANARY.read_text().replace("doc_to_text:", "doc_to_txt:")
    (tasks / "bad.yaml").write_text(text)
    with pytest.raises(InputError, match=rf"{tasks / 'bad.yaml'}: unknown field 'doc_to_txt'"):
        run_tasks(fake_model, [TaskSpec(name="driftloop_canary")], [tasks])


def test_yaml_naming_a_missing_data_file_is_an_input_error(fake_model: Path, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.yaml").write_text(CANARY.read_text())  # canary.jsonl is not copied
    with pytest.raises(InputError, match=rf"{tasks / 't.yaml'}: dataset_kwargs.data_files"):
        run_tasks(fake_model, [TaskSpec(name="driftloop_canary")], [tasks])


def test_unknown_metric_of_record_is_an_input_error(fake_model: Path) -> None:
    with pytest.raises(InputError, match="no metric 'f1'.*acc"):
        run_tasks(fake_model, [TaskSpec(name="driftloop_canary", metric="f1")], [TASKS_DIR])


def test_unparsable_yaml_is_named_when_its_task_is_not_found(fake_model: Path, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "broken.yaml").write_text("task: driftloop_canary\n  output_type: [multiple_choice\n")
    with pytest.raises(
        InputError, match=rf"unknown task 'driftloop_canary'.*unreadable task file\(s\): {tasks / 'broken.yaml'}"
    ):
        run_tasks(fake_model, [TaskSpec(name="driftloop_canary")], [tasks])


@pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_without_vllm_is_an_input_error(fake_model: Path) -> None:
    with pytest.raises(InputError, match="benchmark.backend: vllm is not installed"):
        run_tasks(fake_model, [TaskSpec(name="driftloop_canary", limit=2)], [TASKS_DIR], backend="vllm")
