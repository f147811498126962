"""On-demand evaluation: window specs and model references, then `driftloop evaluate` end to end
on the demo model (real lm-eval, MLflow on SQLite, Prefect's harness, the SQLite store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from driftloop.app.cli import main
from driftloop.core.config import load_config
from driftloop.core.errors import InputError
from driftloop.core.types import FeedbackEvent
from driftloop.services.evaluation import check_model_ref, parse_window
from driftloop.store import Store
from driftloop.tracking import Tracker

T0 = datetime(2025, 3, 1, tzinfo=UTC)
CANARY = "driftloop_canary/acc"


# ------------------------------------------------------------------ shared by the API tests
def feedback(n: int = 240, days: float = 8.0, seed: int = 0) -> list[FeedbackEvent]:
    """n events over `days` days from T0; the last day's billing answers are mostly thumbs-down."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        topic = ["billing", "account", "shipping"][i % 3]
        ts = T0 + timedelta(days=days * i / n)
        bad = topic == "billing" and ts >= T0 + timedelta(days=days - 1)
        up = bool(rng.random() < (0.2 if bad else 0.85))
        out.append(
            FeedbackEvent(
                event_id=f"e{seed}-{i}",
                ts=ts,
                model_version="1",
                prompt=f"question {i} about {topic}",
                response="ok " * int(rng.integers(3, 30)),
                thumbs_up=up,
                rating=1.0 if up else 0.0,
                segment={"topic": topic},
                latency_ms=float(rng.normal(300, 30)),
                tokens_in=int(rng.integers(5, 50)),
                tokens_out=int(rng.integers(5, 80)),
            )
        )
    return out


def make_world(folder: Path, model_dir: Path, extra: str = "") -> Path:
    """A driftloop.yaml (canary suite of 6 items, golden suite) with 240 feedback events in its
    store and `model_dir` registered as version 1 with alias champion; returns the config path."""
    cfg_path = folder / "driftloop.yaml"
    cfg_path.write_text(f"""
project: evaltest
state_dir: state
model: {{base: {model_dir}}}
monitor: {{segment_fields: [topic], workspace: false, text: {{descriptors: false}}}}
policy: {{min_n: 10}}
benchmark:
  batch_size: 8
  suites:
    canary: {{role: canary, tasks: [{{name: driftloop_canary, limit: 6}}]}}
    golden: {{role: target, tasks: [{{name: driftloop_golden, kind: golden}}]}}
{extra}
""")
    cfg = load_config(cfg_path)
    cfg.state_path.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.store_url)
    store.migrate()
    store.add_batch(feedback(), [], "test")
    store.close()
    tr = Tracker.from_config(cfg)
    run = tr.start_run("register")
    tr.register_model(run, model_dir)
    tr.end_run(run)
    tr.move_champion("1", by="test", reason="first", how="initial")
    return cfg_path


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ------------------------------------------------------------------ window specs and model refs
@pytest.mark.parametrize(
    "spec, days, start, end",
    [
        ("7d", 7.0, None, None),
        ("24h", 1.0, None, None),
        (" 1.5d ", 1.5, None, None),
        ("2025-01-01..2025-01-08", None, datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 8, tzinfo=UTC)),
        (
            "2025-01-01T12:00+02:00..2025-01-02",
            None,
            datetime(2025, 1, 1, 10, tzinfo=UTC),
            datetime(2025, 1, 2, tzinfo=UTC),
        ),
    ],
)
def test_window_specs_parse(spec, days, start, end) -> None:
    w = parse_window(spec)
    assert (w.days, w.start, w.end) == (days, start, end)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("7w", "expected Nd, Nh"),
        ("0d", "must be positive"),
        ("2025-01-08..2025-01-01", "start must be before the end"),
        ("yesterday..today", "'yesterday' is not an ISO 8601"),
    ],
)
def test_bad_window_specs_name_the_problem(spec, message) -> None:
    with pytest.raises(InputError, match=message) as e:
        parse_window(spec)
    assert spec in str(e.value) and "\n" not in str(e.value)


def test_default_window_is_none() -> None:
    assert parse_window(None) is None and parse_window("  ") is None


def test_model_references(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert check_model_ref("champion") == "champion"
    assert check_model_ref(" 12 ") == "12"
    assert check_model_ref(str(model)) == str(model)
    with pytest.raises(InputError, match="no such folder"):
        check_model_ref(str(tmp_path / "missing"))
    with pytest.raises(InputError, match=r"not a model folder \(no config.json\)"):
        check_model_ref(str(tmp_path))
    with pytest.raises(InputError, match="not an alias"):
        check_model_ref("two words")


def test_deployment_parameters() -> None:
    """`prefect deployment run 'evaluate/on-demand' -p model=2` sends the JSON number 2; Prefect
    must accept it, and the flow's parameters are the documented four (plus the API's run id)."""
    from prefect.utilities.callables import parameter_schema

    from flows.evaluate import evaluate

    assert list(parameter_schema(evaluate.fn).properties) == ["model", "suites", "window", "config", "run_id"]
    params = evaluate.validate_parameters({"model": 2, "suites": ["canary"], "window": "7d"})
    assert str(params["model"]) == "2" and params["suites"] == ["canary"]


# ------------------------------------------------------------------ the CLI, end to end
@pytest.fixture(scope="module")
def world(tmp_path_factory, demo_model: Path, prefect_harness, one_torch_thread) -> Path:
    return make_world(tmp_path_factory.mktemp("evaluate"), demo_model)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    from driftloop.app.report import console

    monkeypatch.setattr(console, "width", 250)  # rich wraps cells at 80 columns under capture


@pytest.mark.slow
def test_cli_evaluates_the_champion_and_logs_one_run(world: Path, capsys) -> None:
    assert main(["--config", str(world), "evaluate", "--model", "champion", "--suite", "canary", "--window", "1d"]) == 0
    out = capsys.readouterr().out
    assert "evaluation of champion (version 1)" in out
    canary = next(line for line in out.splitlines() if CANARY in line)
    assert "benchmark canary" in canary and "[" in canary and " 6 " in canary
    billing = next(line for line in out.splitlines() if "thumbs_up_rate" in line and "topic=billing" in line)
    assert "quality" in billing and " 10 " in billing
    assert "current vs" in out and "reference events" in out

    tr = Tracker.from_config(load_config(world))
    runs = tr.client.search_runs([tr.experiment_id], filter_string="tags.`driftloop.kind` = 'evaluation'")
    assert len(runs) == 1
    run = runs[0]
    assert f"MLflow run {run.info.run_id}" in out
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert (tags["driftloop.model"], tags["driftloop.model_version"], tags["driftloop.window"]) == (
        "champion",
        "1",
        "1d",
    )
    m = run.data.metrics
    assert 0 <= m[f"benchmark/{CANARY}/ci_low"] <= m[f"benchmark/{CANARY}"] <= m[f"benchmark/{CANARY}/ci_high"] <= 1
    # Only the last day is current: its billing thumbs-up rate (~0.2) is far below the reference's (~0.85).
    assert m["quality/thumbs_up_rate/topic:billing"] <= 0.3 < 0.7 <= m["quality/thumbs_up_rate/topic:shipping"]
    result = tr.read_json(run.info.run_id, "evaluation.json")
    assert result["version"] == "1" and result["monitor"]["n_current"] == 30
    assert result["monitor"]["n_reference"] == 210
    assert result["suites"]["canary"][0]["value"] == m[f"benchmark/{CANARY}"]
    # The monitor and benchmark stages are nested runs of the evaluation.
    children = tr.client.search_runs([tr.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert {c.data.tags["driftloop.stage"] for c in children} == {"monitor", "benchmark-1"}


@pytest.mark.slow
def test_flow_on_a_date_range_and_a_model_folder(world: Path, demo_model: Path) -> None:
    from flows.evaluate import evaluate

    res = evaluate(model=str(demo_model), suites=["canary"], window="2025-03-05..2025-03-06", config=str(world))
    w = res.monitor["windows"]
    assert (w["current_start"][:10], w["current_end"][:10], w["reference_start"][:10]) == (
        "2025-03-05",
        "2025-03-06",
        "2025-02-26",
    )
    assert res.monitor["n_current"] == 30 and res.monitor["n_reference"] == 120
    assert res.version == "" and res.model_path == str(demo_model)
    assert res.suites["canary"][0].n == 6


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "./no-such-model"], "model ./no-such-model: no such folder"),
        (["--model", "99"], "version 99 of 'driftloop-model' does not exist"),
        (["--model", "staging"], "model 'staging': no such alias"),
        (["--window", "last week"], "window 'last week': expected Nd, Nh"),
        (["--suite", "canry"], "suite 'canry' is not configured; did you mean canary?"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(world: Path, capsys, argv, message) -> None:
    before = _evaluation_runs(world)
    assert main(["--config", str(world), "evaluate", *argv]) == 2
    line = error_line(capsys)
    assert line.startswith("driftloop: error: ") and message in line
    assert _evaluation_runs(world) == before  # nothing was started


def test_a_folder_that_is_not_a_model_is_refused(world: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "notes").mkdir()
    before = _evaluation_runs(world)
    assert main(["--config", str(world), "evaluate", "--model", str(tmp_path / "notes")]) == 2
    assert "not a model folder (no config.json)" in error_line(capsys)
    assert _evaluation_runs(world) == before


def _evaluation_runs(cfg_path: Path) -> int:
    tr = Tracker.from_config(load_config(cfg_path))
    return len(tr.client.search_runs([tr.experiment_id], filter_string="tags.`driftloop.kind` = 'evaluation'"))
