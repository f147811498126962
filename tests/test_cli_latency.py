"""The fast CLI's paths answer what the slow ones answer: flows run as plain Python without a
Prefect API (retries kept, no engine), light commands import nothing heavy, `status` reads the
aliases MLflow would give, and a cached `benchmark` prints the figures the flow would print.
(The timings themselves are benchmarks/cli_latency.py's job.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import flow, task

from driftloop.app.cli import main
from driftloop.core.config import load_config
from flows import common
from flows.common import plain_calls, prefect_api_url, run_flow, use_engine

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Prefect API (whatever Prefect's test harness set), and any use of Prefect's engine fails."""
    import prefect.flow_engine
    import prefect.task_engine

    def refuse(*args, **kwargs):
        raise AssertionError("Prefect's engine was started")

    monkeypatch.setattr(common, "prefect_api_url", lambda: None)
    monkeypatch.setattr(prefect.flow_engine, "run_flow", refuse)
    monkeypatch.setattr(prefect.task_engine, "run_task", refuse)


def test_help_and_the_parser_import_nothing_heavy() -> None:
    code = (
        "import sys\nfrom driftloop.app.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('prefect', 'mlflow', 'torch', 'evidently', 'lm_eval', 'pandas', 'scipy', 'sqlalchemy')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_prefect_api_comes_from_the_environment_or_prefect_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.internal:4200/api")
    assert prefect_api_url() == "http://prefect.internal:4200/api" and use_engine()
    monkeypatch.delenv("PREFECT_API_URL")
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4300/api"}):
        assert prefect_api_url() == "http://127.0.0.1:4300/api"
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert prefect_api_url() is None and not use_engine()
        cfg = load_config(_write(tmp_path / "d.yaml", "runner: {kind: dask}\n"))
        assert use_engine(cfg)  # prefect-dask's task runner needs the engine


def test_settings_files_are_read_only_where_they_may_name_an_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
    assert not common._prefect_settings_files()
    _write(tmp_path / "pyproject.toml", "[project]\nname = 'x'\n")
    assert not common._prefect_settings_files()
    _write(tmp_path / "home" / "profiles.toml", "[profiles.ops]\nPREFECT_API_URL = 'http://ops:4200/api'\n")
    assert common._prefect_settings_files()


@task(retries=2, retry_delay_seconds=0)
def flaky(calls: list[str], fail_times: int) -> int:
    calls.append("flaky")
    if len(calls) <= fail_times:
        raise ConnectionError("away for a moment")
    return len(calls)


def _not_config_errors(task, task_run, state) -> bool:
    return not isinstance(state.data, ValueError)


@task(retries=3, retry_delay_seconds=[0, 0], retry_condition_fn=_not_config_errors)
def picky(calls: list[str], error: Exception) -> None:
    calls.append("picky")
    raise error


@flow(name="inner-test-flow")
def inner(x: int) -> int:
    from prefect.context import FlowRunContext

    assert FlowRunContext.get() is None
    return x * 2


@flow(name="outer-test-flow")
def outer(x: int, fail_times: int = 0) -> tuple[int, int]:
    calls: list[str] = []
    return inner(x), flaky(calls, fail_times)


def test_plain_calls_run_flows_tasks_and_subflows_without_the_engine(no_engine) -> None:
    assert run_flow(outer, 4) == (8, 1)
    assert run_flow(outer, 4, fail_times=2) == (8, 3)  # two retries, as the engine makes them
    with pytest.raises(ConnectionError):
        run_flow(outer, 4, fail_times=3)  # retries exhausted: the task's own error
    calls: list[str] = []
    with plain_calls(), pytest.raises(ConnectionError):
        picky(calls, ConnectionError("again"))
    assert calls == ["picky"] * 4
    calls.clear()
    with plain_calls(), pytest.raises(ValueError):
        picky(calls, ValueError("a wrong setting fails alike"))  # retry_condition_fn says no
    assert calls == ["picky"]


def test_outside_plain_calls_prefect_runs_the_call(no_engine) -> None:
    with pytest.raises(AssertionError, match="engine was started"):
        inner(1)


def test_ingest_command_runs_plain_and_logs_its_mlflow_run(tmp_path: Path, no_engine, capsys) -> None:
    fb = tmp_path / "fb"
    fb.mkdir()
    ts = "2026-11-01T10:00:00+00:00"
    (fb / "a.jsonl").write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"event_id": "e1", "ts": ts, "prompt": "hello", "rating": 5},
                {"event_id": "e1", "ts": ts, "prompt": "hello", "rating": 5},
                {"event_id": "e2", "ts": ts, "prompt": "bye", "rating": 1},
            ]
        )
    )
    cfg_path = _write(tmp_path / "driftloop.yaml", "sources:\n  - path: fb/*.jsonl\n")
    assert main(["--config", str(cfg_path), "ingest"]) == 0
    assert "read 3 = accepted 2 + duplicates 1 + quarantined 0" in capsys.readouterr().out
    from driftloop.tracking import Tracker

    tr = Tracker.from_config(load_config(cfg_path))
    [run] = tr.client.search_runs([tr.experiment_id])
    assert run.data.metrics["ingest/accepted"] == 2 and run.info.status == "FINISHED"


def test_with_a_prefect_api_the_command_runs_its_flow_there(tmp_path: Path, prefect_harness, capsys) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    def ingest_runs() -> list:
        with get_client(sync_client=True) as client:
            return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["ingest"])))

    assert prefect_api_url() is not None and use_engine()
    fb = _write(
        tmp_path / "fb" / "a.jsonl",
        json.dumps({"event_id": "p1", "ts": "2026-11-01T10:00:00+00:00", "prompt": "hi", "rating": 4}) + "\n",
    )
    cfg_path = _write(tmp_path / "driftloop.yaml", f"sources:\n  - path: {fb.parent}/*.jsonl\n")
    before = {r.id for r in ingest_runs()}
    assert main(["--config", str(cfg_path), "ingest"]) == 0
    assert "read 1 = accepted 1" in capsys.readouterr().out
    [run] = [r for r in ingest_runs() if r.id not in before]
    assert run.state is not None and run.state.is_completed()


def test_status_reads_the_aliases_mlflow_gives(tmp_path: Path, capsys) -> None:
    from driftloop.tracking import Tracker, _read_aliases, alias_versions

    cfg = load_config(_write(tmp_path / "driftloop.yaml", "state_dir: state\n"))
    assert alias_versions(cfg, ["champion"]) == {"champion": None}  # no tracking store yet
    assert not (cfg.state_path / "mlflow.db").exists()
    tr = Tracker.from_config(cfg)
    model = _write(tmp_path / "model" / "config.json", "{}").parent
    run = tr.start_run("register")
    v1 = tr.register_model(run, model)
    v2 = tr.register_model(run, model)
    tr.end_run(run)
    tr.set_alias("champion", v2)
    tr.set_alias("previous", v1)
    names = ["champion", "previous", "challenger"]
    assert (
        _read_aliases(cfg.tracking_uri, cfg.tracking.registered_model, names)
        == {a: tr.alias_version(a) for a in names}
        == {"champion": v2, "previous": v1, "challenger": None}
    )
    assert _read_aliases("http://mlflow.internal:5000", "m", names) is None  # not a SQL store: ask MLflow
    from driftloop.store import Store

    with Store(cfg.store_url) as store:
        store.migrate()
    assert main(["--config", str(tmp_path / "driftloop.yaml"), "status"]) == 0
    out = capsys.readouterr().out
    assert f"champion: version {v2} of {cfg.tracking.registered_model}" in out and "challenger: version -" in out


def test_a_cached_benchmark_is_answered_from_the_cache_alone(
    tmp_path: Path, no_engine, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from driftloop.app.commands import benchmark as cmd
    from driftloop.core.types import MetricResult, SampleResults
    from driftloop.store import Store
    from evaluators.cache import cache_key, model_fingerprint, save_cached, spec_hash
    from evaluators.tasks import TASKS_DIR

    monkeypatch.setattr(cmd.console, "width", 250)
    cfg_path = _write(
        tmp_path / "driftloop.yaml",
        "state_dir: state\nbenchmark:\n  suites:\n"
        "    canary: {role: canary, tasks: [{name: driftloop_canary, limit: 6}]}\n"
        "    golden: {role: target, tasks: [{name: driftloop_golden, kind: golden}]}\n",
    )
    cfg = load_config(cfg_path)
    model = _write(tmp_path / "model" / "model.safetensors", "weights").parent
    assert cmd.from_cache(cfg, str(model), ["canary"]) is None  # no store yet: the flow runs
    [spec] = cfg.benchmark.suites["canary"].tasks
    cfg.state_path.mkdir()
    with Store(cfg.store_url) as store:
        store.migrate()
        key = cache_key(model_fingerprint(model), spec_hash(spec, [TASKS_DIR]), spec)
        samples = SampleResults(
            task="driftloop_canary", model="m", metric="acc", items={f"i{k}": 1.0 for k in range(6)}
        )
        save_cached(
            store,
            key,
            samples,
            [MetricResult(name="driftloop_canary/acc", value=1.0, n=6, ci_low=0.61, ci_high=1.0, source="benchmark")],
        )
    got = cmd.from_cache(cfg, str(model), ["canary"])
    assert got is not None and got.model == str(model)
    [m] = got.metrics["canary"]
    assert (m.name, m.value, m.n, m.note) == ("driftloop_canary/acc", 1.0, 6, "cached")
    assert cmd.from_cache(cfg, str(model), None) is None  # the golden suite: its refresh comes first
    assert cmd.from_cache(cfg, "champion", ["canary"]) is None  # a registry model: MLflow resolves it
    assert cmd.from_cache(cfg, str(tmp_path), ["canary"]) is None  # other weights: a miss
    assert cmd.from_cache(cfg, str(model), ["canry"]) is None  # the flow names the unknown suite
    assert main(["--config", str(cfg_path), "benchmark", "--suite", "canary", "--model", str(model)]) == 0
    out = capsys.readouterr().out
    [row] = [line for line in out.splitlines() if "driftloop_canary/acc" in line]
    assert "1.000" in row and "[0.610, 1.000]" in row and "cached" in row
    assert "no new MLflow run" in out and not (cfg.state_path / "mlflow.db").exists()


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
