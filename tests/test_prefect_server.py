"""The repository's prefect.yaml on a real Prefect server: deploy, workers, on-demand
evaluation and the event-driven retrain automation.

One server for the module (`prefect server start` on loopback, a temporary PREFECT_HOME,
SQLite): `prefect deploy --all` from the repository, a process worker on `default`, and
one on `gpu` started when a retrain must really run. DRIFTLOOP_HOME is this checkout
(entrypoints resolve against the pull step's working directory); the project under test
is a temporary folder named by DRIFTLOOP_CONFIG. Every process is started in its own
process group and killed with it, whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from driftloop.core.config import load_config
from driftloop.store import Store
from driftloop.tracking import Tracker

pytestmark = [pytest.mark.slow, pytest.mark.server]

ROOT = Path(__file__).resolve().parents[1]
PREFECT = [sys.executable, "-m", "prefect"]
EVENT = "driftloop.regression.detected"
# After the first run appears, how long a second one gets to appear: Prefect's actions service
# creates a run ~0.1-2.5 s after the automation fires (measured here under load).
SETTLE_S = 10


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    """Background processes, each in its own process group, with their logs in one folder."""

    def __init__(self, logs: Path, env: dict[str, str]):
        self.logs, self.env, self.procs = logs, env, {}

    def start(self, name: str, args: list[str], **env: str) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("wb")
        p = subprocess.Popen(
            args, cwd=ROOT, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = p
        return p

    def tail(self, name: str, n: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for p in self.procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=15)


def _wait(what: str, check, timeout: float, procs: Procs | None = None, log: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{procs.tail(log) if procs else ''}")
        time.sleep(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_model, e2e_config):
    """A Prefect server with the repository's deployments, a `default` worker, and a project
    (config, a day of regressed feedback after 7 baseline days, champion version 1)."""
    from driftloop.demo.world import simulate
    from flows.common import StageParams
    from flows.registry import ensure_champion

    tmp = tmp_path_factory.mktemp("prefect-server")
    home, logs = tmp / "prefect-home", tmp / "logs"
    home.mkdir()
    logs.mkdir()
    project = f"srv{uuid.uuid4().hex[:6]}"
    (tmp / "project").mkdir()
    cfg_path = e2e_config(tmp / "project", demo_model)
    text = cfg_path.read_text().replace("project: e2e", f"project: {project}")
    cfg_path.write_text(text.replace("policy: {", "policy: {retrain_via: event, cooldown_hours: 1, "))
    feedback = cfg_path.parent / "feedback"
    feedback.mkdir()
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=8)
    with (feedback / "all.jsonl").open("w") as f:
        for e in simulate(seed=0, start=start):
            f.write(json.dumps(e) + "\n")
    assert ensure_champion.fn(StageParams(config=str(cfg_path))) == "1"

    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DRIFTLOOP_HOME": str(ROOT),
        "DRIFTLOOP_CONFIG": str(cfg_path),
        "OMP_NUM_THREADS": "1",
        "PREFECT_CLI_PROMPT": "false",
        # No scheduled runs (ingest every 15 min...) racing the tests; the schedules are still registered.
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    }
    procs = Procs(logs, env)
    try:
        procs.start("server", PREFECT + ["server", "start", "--host", "127.0.0.1", "--port", str(port)])

        def healthy():
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait("the Prefect server's /api/health", healthy, 120, procs, "server")
        r = subprocess.run(
            PREFECT + ["work-pool", "create", "default", "--type", "process"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

        async def gpu_pool(client):  # the same as the CLI call above, without another ~10 s start-up
            from prefect.client.schemas.actions import WorkPoolCreate
            from prefect.workers.utilities import get_default_base_job_template_for_infrastructure_type

            template = await get_default_base_job_template_for_infrastructure_type("process")
            await client.create_work_pool(WorkPoolCreate(name="gpu", type="process", base_job_template=template))

        _client_call(url, gpu_pool)
        r = subprocess.run(
            PREFECT + ["--no-prompt", "deploy", "--all"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        # DRIFTLOOP_HOME is only read by `prefect deploy` (the pull step's folder is fixed then); in a
        # worker's environment the config loader would take it for an override of a key `home`.
        del procs.env["DRIFTLOOP_HOME"]
        procs.start("worker-default", PREFECT + ["worker", "start", "--pool", "default"])
        yield {"url": url, "env": env, "procs": procs, "config": cfg_path, "project": project, "deploy": r.stdout}
    finally:
        procs.stop_all()


def _client_call(url: str, fn):
    """Run `fn(client)` (a coroutine) against the module's server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def go():
        async with get_client() as client:
            return await fn(client)

    with temporary_settings(updates={PREFECT_API_URL: url}):
        return asyncio.run(go())


def _runs_of(url: str, deployment: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    async def read(client):
        dep = await client.read_deployment_by_name(deployment)
        return await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))

    return _client_call(url, read)


def test_deploy_all_registers_every_deployment_with_enforced_schemas(server):
    names = [
        "ingest/scheduled",
        "monitor/hourly",
        "benchmark/nightly",
        "loop/daily",
        "evaluate/on-demand",
        "retrain/gpu",
    ]

    async def read(client):
        return [await client.read_deployment_by_name(n) for n in names]

    deps = {f"{n}": d for n, d in zip(names, _client_call(server["url"], read))}
    assert all(d.enforce_parameter_schema for d in deps.values())
    assert {n for n, d in deps.items() if d.schedules} == set(names) - {"evaluate/on-demand", "retrain/gpu"}
    assert deps["retrain/gpu"].work_pool_name == "gpu" and deps["loop/daily"].work_pool_name == "default"
    assert deps["retrain/gpu"].global_concurrency_limit.limit == 1
    # The server itself refuses parameters outside the flow's schema.
    r = subprocess.run(
        PREFECT + ["deployment", "run", "evaluate/on-demand", "-p", "modle=champion"],
        cwd=ROOT,
        env=server["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "modle" in r.stdout + r.stderr


def test_evaluate_on_demand_runs_on_the_worker_and_logs_to_mlflow(server):
    r = subprocess.run(
        PREFECT + ["deployment", "run", "evaluate/on-demand", "-p", "model=champion", "-p", 'suites=["canary"]'],
        cwd=ROOT,
        env=server["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    def finished():
        runs = _runs_of(server["url"], "evaluate/on-demand")
        return runs if runs and runs[0].state.is_final() else None

    run = _wait("the evaluate/on-demand flow run", finished, 300, server["procs"], "worker-default")[0]
    assert run.state.is_completed(), f"{run.state}\n{server['procs'].tail('worker-default')}"
    assert run.parameters["model"] == "champion"

    tr = Tracker.from_config(load_config(server["config"]))
    evals = tr.client.search_runs([tr.experiment_id], filter_string="tags.`driftloop.kind` = 'evaluation'")
    assert len(evals) == 1 and evals[0].info.status == "FINISHED"
    tags, metrics = evals[0].data.tags, evals[0].data.metrics
    assert tags["driftloop.model"] == "champion" and tags["driftloop.model_version"] == "1"
    assert tags["driftloop.suites"] == "canary"
    assert any(k.startswith("benchmark/") for k in metrics), sorted(metrics)[:20]
    assert "evaluation.json" in {a.path for a in tr.client.list_artifacts(evals[0].info.run_id)}


def _emit(url: str, project: str, cycle_run_id: str, config: str) -> None:
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.events import emit_regression

    with temporary_settings(updates={PREFECT_API_URL: url}):
        assert emit_regression(project, ["test"], cycle_run_id, "1", config)
        EventsWorker.drain_all()


def _retrain_runs(url: str, **match) -> list:
    return [r for r in _runs_of(url, "retrain/gpu") if all(r.parameters.get(k) == v for k, v in match.items())]


def test_automation_starts_retrain_once_for_two_events_within_its_window(server):
    url = server["url"]

    async def automations(client):
        return await client.read_automations()

    auto = next(a for a in _client_call(url, automations) if a.name == "driftloop-retrain-on-regression")
    assert auto.enabled and auto.trigger.expect == {EVENT} and auto.trigger.within.total_seconds() == 3600

    cfg = "/nonexistent/driftloop.yaml"  # never run: nothing works the gpu pool during this test
    project = f"dup{uuid.uuid4().hex[:6]}"
    _emit(url, project, "first", cfg)
    _emit(url, project, "second", cfg)
    # A third event for another project fires too (one bucket per project), and shows the
    # automation is live; runs are created by Prefect's actions service a little after firing.
    _emit(url, f"{project}-sentinel", "sentinel", cfg)

    def ours():
        return [r for r in _retrain_runs(url) if r.parameters.get("cycle_run_id") in ("first", "second")]

    try:
        _wait("the retrain runs", lambda: ours() and _retrain_runs(url, cycle_run_id="sentinel"), 60)
        time.sleep(SETTLE_S)
        assert len(ours()) == 1 and ours()[0].parameters["params"] == {"config": cfg}
    finally:
        _delete(url, _retrain_runs(url))  # so the gpu worker of the next test does not run them


def _delete(url: str, runs: list) -> None:
    async def delete(client):
        for r in runs:
            await client.delete_flow_run(r.id)

    _client_call(url, delete)


def test_loop_in_event_mode_triggers_one_retrain_run_that_finishes_the_cycle(server):
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.common import StageParams
    from flows.loop import loop

    url, cfg_path, project = server["url"], server["config"], server["project"]
    with temporary_settings(updates={PREFECT_API_URL: url}):
        first = loop(StageParams(config=str(cfg_path)))
        second = loop(StageParams(config=str(cfg_path)))
        EventsWorker.drain_all()
    assert first.outcome == "retrain requested (event driftloop.regression.detected)", first.decision_reasons
    assert "retrain" not in second.stage_notes  # the state was triggered: no second event
    runs = _wait("the automation's retrain run", lambda: _retrain_runs(url, cycle_run_id=first.run_id), 60)
    time.sleep(SETTLE_S)
    assert len(_retrain_runs(url)) == 1  # the loop emitted once in two cycles
    assert runs[0].parameters["params"] == {"config": str(cfg_path)}
    server["procs"].start("worker-gpu", PREFECT + ["worker", "start", "--pool", "gpu"])

    def finished():
        rs = _retrain_runs(url, cycle_run_id=first.run_id)
        return rs if rs[0].state.is_final() else None

    run = _wait("the retrain run", finished, 400, server["procs"], "worker-gpu")[0]
    assert run.state.is_completed(), f"{run.state}\n{server['procs'].tail('worker-gpu')}"

    cfg = load_config(cfg_path)
    st = Store(cfg.store_url).get_state(project)
    assert st["state"] == "cooldown" and st["lease_owner"] is None
    tr = Tracker.from_config(cfg)
    assert tr.client.get_run(first.run_id).data.tags["driftloop.outcome"] in (
        "promoted version 2",
        "rejected version 2",
    )
    assert tr.client.get_run(first.run_id).data.tags["driftloop.retrain_via"] == "event"


def test_api_evaluation_runs_as_a_deployment_run_and_reads_back_finished(server, monkeypatch):
    """POST /v1/evaluations on an API whose environment names the Prefect server: the worker runs
    `evaluate/on-demand` for the MLflow run the API created, and GET reads the result back."""
    from test_api_evaluations import AUTH, Server, wait_done

    monkeypatch.setenv("PREFECT_API_URL", server["url"])
    api = Server(server["config"])
    try:
        assert api.app.state.evaluations.via_prefect
        r = httpx.post(f"{api.url}/v1/evaluations", headers=AUTH, json={"suites": ["canary"]}, timeout=60)
        assert r.status_code == 202, r.text
        run_id = r.json()["id"]
        tr = Tracker.from_config(load_config(server["config"]))
        flow_run_id = tr.run_record(run_id)["tags"]["driftloop.prefect_flow_run"]
        body = wait_done(api.url, run_id, timeout=300)
    finally:
        api.stop()
    assert body["status"] == "finished", f"{body}\n{server['procs'].tail('worker-default')}"
    assert body["suites"] == ["canary"] and any(k.startswith("canary") for k in str(body["results"]).split("'"))
    run = next(r for r in _runs_of(server["url"], "evaluate/on-demand") if str(r.id) == flow_run_id)
    assert run.state.is_completed() and run.parameters["run_id"] == run_id


def test_an_evaluation_whose_flow_run_crashed_reads_back_failed_with_the_reason(server, monkeypatch):
    """The state a worker that died before the flow started leaves behind: the MLflow run SCHEDULED,
    its flow run Crashed on the server. GET answers failed, names the flow run, marks the run KILLED."""
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed, Scheduled
    from test_api_evaluations import AUTH, Server

    async def crashed_run(client):
        dep = await client.read_deployment_by_name("evaluate/on-demand")
        later = datetime.now(UTC) + timedelta(days=1)  # never due: no worker takes it
        fr = await client.create_flow_run_from_deployment(
            dep.id, parameters={"model": "champion"}, state=Scheduled(scheduled_time=later)
        )
        await client.set_flow_run_state(
            fr.id, Crashed(message="Flow run infrastructure exited with code -9."), force=True
        )
        return fr.id, (await client.read_flow_run(fr.id)).state.type

    flow_run_id, state = _client_call(server["url"], crashed_run)
    assert state == StateType.CRASHED
    tr = Tracker.from_config(load_config(server["config"]))
    tags = {
        "driftloop.kind": "evaluation",
        "driftloop.model": "champion",
        "driftloop.prefect_flow_run": str(flow_run_id),
    }
    stranded = tr.start_run("evaluate-champion", tags=tags)
    tr.set_run_status(stranded, "SCHEDULED")
    # ...and one whose flow run Prefect still holds (scheduled): it stays queued.
    waiting = tr.start_run("evaluate-champion", tags={**tags, "driftloop.prefect_flow_run": str(_scheduled(server))})
    tr.set_run_status(waiting, "SCHEDULED")
    monkeypatch.setenv("PREFECT_API_URL", server["url"])
    api = Server(server["config"])
    try:
        body = httpx.get(f"{api.url}/v1/evaluations/{stranded}", headers=AUTH, timeout=60).json()
        assert httpx.get(f"{api.url}/v1/evaluations/{waiting}", headers=AUTH, timeout=60).json()["status"] == "queued"
    finally:
        api.stop()
    assert body["status"] == "failed", body
    assert (
        body["error"]
        == f"lost: Prefect flow run {flow_run_id} ended Crashed: Flow run infrastructure exited with code -9."
    )
    assert tr.run_record(stranded)["status"] == "KILLED" and tr.run_record(waiting)["status"] == "SCHEDULED"


def _scheduled(server) -> str:
    """A flow run of `evaluate/on-demand` scheduled a day ahead (no worker takes it)."""
    from prefect.states import Scheduled

    async def make(client):
        dep = await client.read_deployment_by_name("evaluate/on-demand")
        later = datetime.now(UTC) + timedelta(days=1)
        return (
            await client.create_flow_run_from_deployment(
                dep.id, parameters={"model": "champion"}, state=Scheduled(scheduled_time=later)
            )
        ).id

    return str(_client_call(server["url"], make))
