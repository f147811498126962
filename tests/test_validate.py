"""`driftloop validate`: a config anywhere, prefect.yaml only where there is one, and each task's metric."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from driftloop.app.cli import main

REPO = Path(__file__).resolve().parents[1]


def write(folder: Path, suites: str = "") -> Path:
    """A config in `folder` with one feedback file, and `suites` under benchmark.suites."""
    (folder / "fb").mkdir(parents=True, exist_ok=True)
    (folder / "fb" / "x.jsonl").write_text("")
    p = folder / "driftloop.yaml"
    p.write_text("sources:\n  - path: fb/*.jsonl\n" + (f"benchmark:\n  suites:\n{suites}" if suites else ""))
    return p


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv", [["validate", "-c", "{p}"], ["--config", "{p}", "validate"]])
def test_a_config_outside_the_checkout_validates_from_any_directory(tmp_path, monkeypatch, capsys, argv):
    p = write(tmp_path / "somewhere")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # no prefect.yaml here nor beside the config
    assert main([a.format(p=p) for a in argv]) == 0
    out = capsys.readouterr().out
    assert f"config {p}: ok" in out and "lm-eval project tasks: ok (driftloop_canary)" in out
    assert "prefect.yaml: not checked (none beside the config or in the working directory; give --prefect)" in out


def test_prefect_yaml_is_checked_where_given_or_beside_the_config(tmp_path, monkeypatch, capsys):
    p = write(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "-c", str(p), "--prefect", str(REPO / "prefect.yaml")]) == 0
    assert "loop/daily" in capsys.readouterr().out
    assert main(["validate", "-c", str(p), "--prefect", str(tmp_path / "none.yaml")]) == 2
    assert error_line(capsys) == f"driftloop: error: {tmp_path / 'none.yaml'}: not found"
    shutil.copy(REPO / "prefect.yaml", tmp_path / "prefect.yaml")  # beside the config: checked, and wrong here
    assert main(["validate", "-c", str(p)]) == 2
    assert "prefect.yaml: deployments.0.entrypoint: 'flows.ingest:ingest' does not name" in error_line(capsys)


@pytest.mark.parametrize(
    "task, metric, has",
    [
        ("{name: driftloop_canary}", "accuracy", "acc"),
        ("{name: driftloop_golden, kind: golden}", "f1", "acc"),
        ("{name: crows_pairs_english, kind: builtin}", "pct_stereo", "likelihood_diff, pct_stereotype"),
        ("{name: plain_mc}", "exact_match", "acc, acc_norm"),  # no metric_list: lm-eval's defaults for its output_type
    ],
)
def test_an_unknown_metric_is_one_line_naming_suite_task_and_the_metrics_there_are(
    tmp_path, monkeypatch, capsys, task, metric, has
):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    text = (REPO / "evaluators" / "tasks" / "driftloop_canary.yaml").read_text()
    (tasks / "plain_mc.yaml").write_text(
        text.replace("task: driftloop_canary", "task: plain_mc").split("metric_list:")[0]
    )
    p = write(
        tmp_path,
        f"    ok:\n      role: target\n      tasks: [{{name: driftloop_canary}}]\n"
        f"    mine:\n      role: canary\n      tasks: [{{name: plain_mc, metric: acc_norm}}, "
        f"{task[:-1]}, metric: {metric}}}]\n",
    )
    with open(p, "a") as f:
        f.write("  task_dirs: [tasks]\n")
    monkeypatch.chdir(tmp_path)
    name = task.split(",")[0].split(": ")[1].rstrip("}")
    assert main(["validate", "-c", str(p)]) == 2
    assert error_line(capsys) == (
        f"driftloop: error: {p}: benchmark.suites.mine.tasks.1.metric: task {name!r} "
        f"has no metric {metric!r} (it has: {has})"
    )


def test_every_metric_of_record_that_exists_passes(tmp_path, monkeypatch, capsys):
    p = write(
        tmp_path,
        "    bias:\n      role: bias\n      tasks: [{name: crows_pairs_english, kind: builtin, "
        "metric: pct_stereotype}, {name: bbq, kind: builtin, metric: amb_bias_score}]\n"
        "    golden:\n      role: target\n      tasks: [{name: driftloop_golden, kind: golden}]\n",
    )
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "-c", str(p)]) == 0
    out = capsys.readouterr().out
    assert "lm-eval built-in tasks: ok (bbq, crows_pairs_english)" in out
    assert "metrics of record: ok (3 tasks)" in out
