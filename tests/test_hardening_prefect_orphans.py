"""`driftloop serve` without a Prefect API starts no Prefect temporary server (a ~300 MB uvicorn
child that survives a SIGKILL of its parent), not even while an on-demand evaluation runs; so
nothing is left behind when serve is killed.

Where a command does run flows on Prefect's engine without an API (`runner.kind: dask`), the
temporary server it starts ends itself once that command is killed (flows/ephemeral.py).

Real processes: `driftloop serve` as a subprocess, an evaluation posted to it (of a model folder
that is no model, so it fails fast once started), its children watched with psutil; a process
that runs a flow on the engine, then is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from test_api_feedback import free_port

pytestmark = pytest.mark.slow  # a serve process and an evaluation: under load a minute or more

TOKEN = "orphan-t0ken-for-tests-x"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def prefect_servers(pid: int) -> list[psutil.Process]:
    """Prefect temporary servers among `pid`'s descendants."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for k in kids:
        try:
            if "prefect.server.api.server:create_app" in " ".join(k.cmdline()):
                out.append(k)
        except psutil.Error:
            pass
    return out


@pytest.fixture
def serve(tmp_path):
    """(base URL, process) of `driftloop serve` on a fresh state folder, no Prefect API configured."""
    (tmp_path / "models" / "not-a-model").mkdir(parents=True)
    (tmp_path / "models" / "not-a-model" / "config.json").write_text("{}")
    cfg = tmp_path / "driftloop.yaml"
    cfg.write_text(f"state_dir: state\napi:\n  model_roots: [{tmp_path / 'models'}]\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        DRIFTLOOP_API__TOKEN=TOKEN,
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # Under load the temporary server is slow to start; let it, so that one would be seen.
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
    )
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "driftloop"), "--config", str(cfg), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, "serve exited"
        try:
            httpx.get(f"{url}/v1/evaluations/x", headers=AUTH, timeout=5)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.3)
    seen: list[psutil.Process] = []
    yield url, proc, seen
    for p in [proc, *seen]:  # whatever is left, this test started it
        try:
            p.kill()
        except (psutil.Error, ProcessLookupError):
            pass
    proc.wait(30)


def test_serve_runs_evaluations_without_a_temporary_server_and_leaves_nothing_when_killed(serve, tmp_path):
    url, proc, seen = serve
    model = str(tmp_path / "models" / "not-a-model")
    r = httpx.post(f"{url}/v1/evaluations", headers=AUTH, json={"model": model}, timeout=60)
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    deadline = time.monotonic() + 240
    while not seen:  # until the evaluation ends, or a temporary server shows up
        seen.extend(prefect_servers(proc.pid))
        status = httpx.get(f"{url}/v1/evaluations/{run_id}", headers=AUTH, timeout=60).json()["status"]
        if status in ("finished", "failed"):
            break
        assert time.monotonic() < deadline, f"evaluation still {status}"
        time.sleep(0.2)
    seen.extend(s for s in prefect_servers(proc.pid) if s not in seen)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    time.sleep(1)
    orphans = [s.pid for s in seen if s.is_running() and s.status() != psutil.STATUS_ZOMBIE]
    assert orphans == [], f"Prefect temporary servers left after SIGKILL of serve: {orphans}"
    assert seen == [], f"serve started Prefect's temporary server: {[s.pid for s in seen]}"


ENGINE_CHILD = """
import sys, time
from prefect import flow
from flows.common import run_flow

@flow
def one():
    return 1

run_flow(one, engine=True)
print("ran", flush=True)
time.sleep(600)
"""


def test_a_temporary_server_ends_when_the_command_that_started_it_is_killed(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
    )
    proc = subprocess.Popen([sys.executable, "-c", ENGINE_CHILD], env=env, stdout=subprocess.PIPE, text=True)
    servers: list[psutil.Process] = []
    try:
        assert proc.stdout.readline().strip() == "ran"
        servers = prefect_servers(proc.pid)
        assert servers, "the engine started no temporary server"  # what this test is about
        assert servers[0].memory_info().rss > 50 * 2**20
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        deadline = time.monotonic() + 30
        while any(s.is_running() and s.status() != psutil.STATUS_ZOMBIE for s in servers):
            assert time.monotonic() < deadline, f"temporary server {[s.pid for s in servers]} outlived its command"
            time.sleep(0.2)
    finally:
        for p in [proc, *servers]:
            try:
                p.kill()
            except (psutil.Error, ProcessLookupError):
                pass
