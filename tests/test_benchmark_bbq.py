"""BBQ through lm-eval's own built-in `bbq` task, reading the authors' JSONL instead of the hub.

The data folder is ../shared/data/bbq beside the repository (CC-BY 4.0, not shipped),
or $DRIFTLOOP_BBQ_DIR; the tests that read it skip, with the reason, where it is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from driftloop.core.config import TaskSpec
from driftloop.core.errors import InputError
from evaluators.benchmark import run_tasks
from evaluators.builtin import builtin_hash, builtin_task_dir, builtin_tasks_root, local_dataset

BBQ_DIR = Path(os.environ.get("DRIFTLOOP_BBQ_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "bbq"))
needs_bbq = pytest.mark.skipif(
    not (BBQ_DIR / "Religion.jsonl").is_file(), reason=f"BBQ data not found at {BBQ_DIR} (set DRIFTLOOP_BBQ_DIR)"
)
N = 24  # items: 12 ambiguous + 12 disambiguated (the file alternates them), 12 choices each


@pytest.fixture(scope="module")
def bbq_run(demo_model: Path):
    mp = pytest.MonkeyPatch()
    # No network: the hub is off, so any attempt to fetch oskarvanderwal/bbq would fail.
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        mp.setenv(k, "1")
    try:
        spec = TaskSpec(name="bbq", kind="builtin", data_dir=str(BBQ_DIR), data_files=["Religion.jsonl"], limit=N)
        return run_tasks(demo_model, [spec], [], batch_size=16, model_id="demo")
    finally:
        mp.undo()


def _religion(n: int) -> list[dict]:
    with (BBQ_DIR / "Religion.jsonl").open() as f:
        return [json.loads(next(f)) for _ in range(n)]


def test_builtin_task_folder_is_found_without_the_full_index() -> None:
    assert builtin_task_dir("bbq") == builtin_tasks_root() / "bbq"
    assert builtin_task_dir("bbq_disambig") == builtin_tasks_root() / "bbq"  # by prefix
    with pytest.raises(InputError, match=r"unknown built-in lm-eval task 'bbqq'; did you mean .*bbq"):
        builtin_task_dir("bbqq")


def test_local_dataset_maps_split_named_files_and_otherwise_all_files_to_test(tmp_path: Path) -> None:
    (tmp_path / "test.jsonl").write_text("{}\n")
    (tmp_path / "validation.jsonl").write_text("{}\n")
    cfg = {
        "dataset_path": "org/x",
        "dataset_name": "all",
        "test_split": "test",
        "validation_split": "validation",
        "dataset_kwargs": {"revision": "abc"},
    }
    out = local_dataset(cfg, tmp_path, None, "x")
    assert out["dataset_path"] == "json" and out["dataset_name"] is None
    assert out["dataset_kwargs"] == {
        "data_files": {"test": str(tmp_path / "test.jsonl"), "validation": str(tmp_path / "validation.jsonl")}
    }
    out = local_dataset({"dataset_path": "org/x", "test_split": "test"}, tmp_path, ["val*.jsonl"], "x")
    assert out["dataset_kwargs"]["data_files"] == {"test": [str(tmp_path / "validation.jsonl")]}


def test_missing_data_folder_or_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"data folder does not exist: {tmp_path / 'nope'}"):
        builtin_hash("bbq", tmp_path / "nope", None)
    with pytest.raises(InputError, match=rf"missing data file: no file matches {tmp_path / 'Age.jsonl'}"):
        builtin_hash("bbq", tmp_path, ["Age.jsonl"])
    with pytest.raises(InputError, match=f"missing data file: {tmp_path} has no"):
        builtin_hash("bbq", tmp_path, None)


@needs_bbq
def test_bbq_task_hash_follows_the_chosen_files() -> None:
    one = builtin_hash("bbq", BBQ_DIR, ["Religion.jsonl"])
    assert one == builtin_hash("bbq", BBQ_DIR, ["Religion.jsonl"])
    assert one != builtin_hash("bbq", BBQ_DIR, ["Sexual_orientation.jsonl"])
    assert one != builtin_hash("bbq", None, None)


@needs_bbq
def test_bbq_reports_accuracy_and_both_bias_scores(bbq_run) -> None:
    m = {x.name: x for x in bbq_run.metrics}
    for name in (
        "bbq/acc",
        "bbq/accuracy_amb",
        "bbq/accuracy_disamb",
        "bbq/amb_bias_score",
        "bbq/disamb_bias_score",
        "bbq/amb_bias_score_Religion",
        "bbq/disamb_bias_score_Religion",
    ):
        assert name in m and m[name].n == N, sorted(m)
    # Categories absent from the data give NaN in lm-eval; they are left out, not reported as numbers.
    assert "bbq/amb_bias_score_Age" not in m
    assert m["bbq/amb_bias_score"].higher_is_better is False and m["bbq/acc"].higher_is_better is True
    assert -1.0 <= m["bbq/amb_bias_score"].value <= 1.0 and -1.0 <= m["bbq/disamb_bias_score"].value <= 1.0
    acc = m["bbq/acc"]
    assert 0.0 <= acc.ci_low <= acc.value <= acc.ci_high <= 1.0 and acc.note.startswith("95% CI: Wilson score")
    assert m["bbq/amb_bias_score"].ci_low is None and "no stderr" in m["bbq/amb_bias_score"].note


@needs_bbq
def test_bbq_items_are_the_first_records_with_stable_ids_and_agree_with_the_aggregates(bbq_run) -> None:
    [s] = bbq_run.samples
    rows = _religion(N)
    assert list(s.items) == [f"Religion-{r['example_id']}" for r in rows]
    by_cond: dict[str, list[float]] = {"ambig": [], "disambig": []}
    for r in rows:
        iid = f"Religion-{r['example_id']}"
        d = s.detail[iid]
        assert len(d["loglikelihoods"]) == 12  # 2 named answers + lm-eval's 10 "unknown" phrasings
        assert d["chosen"] == max(range(12), key=d["loglikelihoods"].__getitem__)
        by_cond[r["context_condition"]].append(s.items[iid])
    m = {x.name: x.value for x in bbq_run.metrics}
    assert m["bbq/acc"] == pytest.approx(s.mean)
    assert m["bbq/accuracy_amb"] == pytest.approx(sum(by_cond["ambig"]) / len(by_cond["ambig"]))
    assert m["bbq/accuracy_disamb"] == pytest.approx(sum(by_cond["disambig"]) / len(by_cond["disambig"]))


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield
