"""The cluster path on one machine: an MLflow tracking server whose backend store is a
throwaway PostgreSQL database, the feedback store in another PostgreSQL database, and
the demo's two cycles run against both over HTTP (what `deploy/rehearse-cluster.sh` does
by hand). Afterwards the runs, the registry alias and the store's state are read back
from PostgreSQL itself, not from the client that wrote them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import new_pg_database, wait_healthy

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(pg_port, tmp_path_factory):
    """`mlflow server` on loopback with its backend store on PostgreSQL and server-side artifacts."""
    backend = new_pg_database(pg_port)
    artifacts = tmp_path_factory.mktemp("mlartifacts")
    port = _free_port()
    log = tmp_path_factory.mktemp("mlflow-log") / "server.log"
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(mlflow_bin),
                "server",
                "--backend-store-uri",
                backend,
                "--artifacts-destination",
                str(artifacts),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/health", proc, log)  # the first start migrates the PostgreSQL schema
        yield url, backend, artifacts
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


def _pg(url: str):
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))


def test_a_cycle_against_an_mlflow_server_on_postgresql(
    mlflow_server, pg_port, tmp_path, demo_model, prefect_harness, e2e_config, one_torch_thread
):
    from flows.common import _CACHE
    from flows.demo import run_demo

    url, backend, artifacts = mlflow_server
    store_url = new_pg_database(pg_port)
    cfg_path = e2e_config(tmp_path, demo_model, extra=f"store: {{url: '{store_url}'}}\ntracking: {{uri: '{url}'}}")
    try:
        first, second = run_demo(str(cfg_path))
    finally:
        _CACHE.clear()  # the context holds engines on databases this module created
    assert first.outcome == "no retrain needed"
    assert second.outcome == "promoted version 2", second.gate_reasons

    # The registry, asked over the server's REST API: the gate moved the alias.
    r = httpx.get(
        f"{url}/api/2.0/mlflow/registered-models/alias",
        params={"name": "driftloop-model", "alias": "champion"},
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["model_version"]["version"] == "2"

    # MLflow's own tables on PostgreSQL hold both cycles with their outcomes and every stage.
    with _pg(backend) as c:
        outcomes = {row[0] for row in c.execute("select value from tags where key = 'driftloop.outcome'").fetchall()}
        stages = {row[0] for row in c.execute("select value from tags where key = 'driftloop.stage'").fetchall()}
        versions = c.execute("select count(*) from model_versions where name = 'driftloop-model'").fetchone()[0]
    assert {"no retrain needed", "promoted version 2"} <= outcomes
    assert {"ingest", "monitor", "retrain", "benchmark-champion", "benchmark-2"} <= stages
    assert versions == 2
    # Artifacts went through the server (proxied) into its destination, not to a local folder.
    assert any(p.name == "drift_report.html" for p in Path(artifacts).rglob("*.html"))
    assert not (tmp_path / "state" / "mlartifacts").exists()

    # The feedback store on PostgreSQL: the events and the state machine in cooldown.
    with _pg(store_url) as c:
        n_events = c.execute("select count(*) from feedback").fetchone()[0]
        state = c.execute("select state from loop_state where project = 'e2e'").fetchone()[0]
    assert n_events > 1000 and state == "cooldown"
