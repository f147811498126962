"""`driftloop benchmark` end to end: the table, the cached rerun, the MLflow artifact, and bad input (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_benchmark_bbq import BBQ_DIR, needs_bbq

from driftloop.app.cli import main
from driftloop.core.config import load_config
from driftloop.tracking import Tracker
from evaluators.benchmark import TASKS_DIR

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    from driftloop.app.commands import benchmark as cmd

    monkeypatch.setattr(cmd.console, "width", 250)  # rich wraps cells at 80 columns under capture


def write_config(tmp_path: Path, suites: str, extra: str = "") -> Path:
    p = tmp_path / "driftloop.yaml"
    p.write_text(f"project: bench\nstate_dir: state\nbenchmark:\n  batch_size: 8\n  suites:\n{suites}{extra}")
    return p


CANARY_SUITE = "    canary: {role: canary, tasks: [{name: driftloop_canary, limit: 6}]}\n"


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error printed"
    return err[-1]


def test_list_shows_suites_and_tasks(tmp_path: Path, capsys) -> None:
    cfg = write_config(
        tmp_path,
        CANARY_SUITE + "    bias: {role: bias, tasks: [{name: bbq, kind: builtin, "
        "data_dir: data/bbq, data_files: [Religion.jsonl], limit: 50}]}\n",
    )
    assert main(["--config", str(cfg), "benchmark", "--list"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "driftloop_canary" in line or "bbq" in line]
    assert len(rows) == 2
    assert "canary" in rows[0] and "project" in rows[0] and "6" in rows[0]
    assert "bias" in rows[1] and "builtin" in rows[1] and str(tmp_path / "data" / "bbq") in rows[1]
    assert "Religion.jsonl" in rows[1] and "50" in rows[1]
    assert not (tmp_path / "state").exists()


def test_run_prints_a_table_logs_samples_to_mlflow_and_reruns_from_the_cache(
    demo_model: Path, tmp_path: Path, capsys
) -> None:  # noqa: F811
    from flows.benchmark import BenchmarkParams, benchmark

    cfg = write_config(tmp_path, CANARY_SUITE)
    res = benchmark(BenchmarkParams(config=str(cfg), model=str(demo_model), suites=["canary"]))
    [s] = res.samples["canary"]
    [m] = res.metrics["canary"]
    assert len(s.items) == 6 and m.name == "driftloop_canary/acc" and m.note.startswith("95% CI: Wilson score")

    tr = Tracker.from_config(load_config(str(cfg)))
    got = tr.client.download_artifacts(res.run_id, "samples/canary/driftloop_canary.json", str(tmp_path / "dl"))
    logged = json.loads(Path(got).read_text())
    assert logged["items"] == s.items and logged["detail"] == s.detail

    assert main(["--config", str(cfg), "benchmark", "--suite", "canary", "--model", str(demo_model)]) == 0
    out = capsys.readouterr().out
    [row] = [line for line in out.splitlines() if "driftloop_canary/acc" in line]
    assert f"{m.value:.3f}" in row and f"[{m.ci_low:.3f}, {m.ci_high:.3f}]" in row and "cached" in row


@needs_bbq
def test_bias_suite_reports_bbq_scores_through_the_cli(demo_model: Path, tmp_path: Path, capsys) -> None:  # noqa: F811
    cfg = write_config(
        tmp_path,
        f"    bias: {{role: bias, tasks: [{{name: bbq, kind: builtin, data_dir: {BBQ_DIR}, "
        "data_files: [Sexual_orientation.jsonl], limit: 4}]}\n",
    )
    assert (
        main(["--config", str(cfg), "benchmark", "--suite", "bias", "--model", str(demo_model), "--batch-size", "auto"])
        == 0
    )
    out = capsys.readouterr().out
    for name in (
        "bbq/acc ",
        "bbq/accuracy_amb",
        "bbq/accuracy_disamb",
        "bbq/amb_bias_score (lower is better)",
        "bbq/disamb_bias_score (lower is better)",
    ):
        assert name in out, out


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    """Passes the model-path check; every error below comes before a model is loaded."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    return tmp_path / "model"


def test_unknown_task_exits_2_with_suggestions_and_writes_nothing(tmp_path: Path, fake_model: Path, capsys) -> None:
    cfg = write_config(tmp_path, "    canary: {role: canary, tasks: [{name: driftloop_canry}]}\n")
    assert main(["--config", str(cfg), "benchmark", "--model", str(fake_model)]) == 2
    line = error_line(capsys)
    assert (
        line.startswith("driftloop: error: unknown task 'driftloop_canry'") and "did you mean driftloop_canary" in line
    )
    assert not (tmp_path / "state").exists()


def test_missing_data_file_exits_2_naming_it(tmp_path: Path, fake_model: Path, capsys) -> None:
    (tmp_path / "bbq").mkdir()
    cfg = write_config(
        tmp_path,
        "    bias: {role: bias, tasks: [{name: bbq, kind: builtin, data_dir: bbq, data_files: [Age.jsonl]}]}\n",
    )
    assert main(["--config", str(cfg), "benchmark", "--model", str(fake_model)]) == 2
    assert (
        error_line(capsys) == f"driftloop: error: missing data file: no file matches {tmp_path / 'bbq' / 'Age.jsonl'}"
    )


def test_task_yaml_with_a_bad_field_exits_2_naming_file_and_field(tmp_path: Path, fake_model: Path, capsys) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    shutil.copy(TASKS_DIR / "canary.jsonl", tasks / "canary.jsonl")
    text = (TASKS_DIR / "driftloop_canary.yaml").read_text()
    (tasks / "mine.yaml").write_text(
        text.replace("task: driftloop_canary", "task: my_task").replace("doc_to_text:", "doc_to_txt:")
    )
    cfg = write_config(tmp_path, "    mine: {role: canary, tasks: [{name: my_task}]}\n", "  task_dirs: [tasks]\n")
    assert main(["--config", str(cfg), "benchmark", "--model", str(fake_model)]) == 2
    assert error_line(capsys) == f"driftloop: error: {tasks / 'mine.yaml'}: unknown field 'doc_to_txt'"


def test_missing_model_path_exits_2_naming_it(tmp_path: Path, capsys) -> None:
    cfg = write_config(tmp_path, CANARY_SUITE)
    missing = tmp_path / "no-such-model"
    assert main(["--config", str(cfg), "benchmark", "--model", str(missing)]) == 2
    assert error_line(capsys) == f"driftloop: error: model path does not exist: {missing}"
    assert not (tmp_path / "state").exists()


def test_unknown_suite_exits_2_with_suggestion(tmp_path: Path, capsys) -> None:
    cfg = write_config(tmp_path, CANARY_SUITE)
    assert main(["--config", str(cfg), "benchmark", "--suite", "canry"]) == 2
    assert error_line(capsys) == "driftloop: error: suite 'canry' is not configured; did you mean canary?"


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield
