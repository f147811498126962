"""POST/GET /v1/evaluations on a real uvicorn server on loopback: the token, validation, the
bounded queue, results that match the MLflow run, and status read back by a fresh server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from test_api_feedback import free_port
from test_evaluate import CANARY, make_world

from driftloop.app.api import create_app
from driftloop.core.config import load_config
from driftloop.tracking import Tracker

TOKEN = "eval-t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Server:
    """create_app(config) under uvicorn in a thread on a free loopback port."""

    def __init__(self, cfg_path: Path, **api) -> None:
        cfg = load_config(cfg_path, overrides={"api": {"token": TOKEN, **api}})
        self.app = create_app(cfg, config_path=cfg_path)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.srv = uvicorn.Server(
            uvicorn.Config(
                self.app, host="127.0.0.1", port=int(self.url.rsplit(":", 1)[1]), log_level="warning", access_log=False
            )
        )
        self.thread = threading.Thread(target=self.srv.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.srv.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.srv.should_exit = True
        self.thread.join(30)


def wait_done(url: str, run_id: str, timeout: float = 180) -> dict:
    """Poll GET /v1/evaluations/{id} until finished or failed; every answer's status is a known one."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{url}/v1/evaluations/{run_id}", headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] in ("queued", "running", "finished", "failed")
        if body["status"] in ("finished", "failed"):
            return body
        assert time.monotonic() < deadline, f"evaluation still {body['status']}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def world(tmp_path_factory, demo_model: Path, prefect_harness, one_torch_thread) -> Path:
    return make_world(tmp_path_factory.mktemp("api-eval"), demo_model)


@pytest.fixture(scope="module")
def server(world: Path, tmp_path_factory):
    # One running, none waiting: a second request while the first runs gets 429. Model folders
    # are accepted under the tests' temporary folder only.
    s = Server(
        world, max_concurrent_evaluations=1, max_queued_evaluations=0, model_roots=[str(tmp_path_factory.getbasetemp())]
    )
    yield s
    s.stop()


def post_when_free(url: str, body: dict, timeout: float = 30) -> httpx.Response:
    """POST an evaluation, retrying while the one slot is still held by the previous one
    (its run is marked finished a moment before its thread lets go of the slot)."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.post(f"{url}/v1/evaluations", headers=AUTH, json=body, timeout=30)
        if r.status_code != 429 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def evaluation_runs(cfg_path: Path) -> list:
    tr = Tracker.from_config(load_config(cfg_path))
    return tr.client.search_runs([tr.experiment_id], filter_string="tags.`driftloop.kind` = 'evaluation'")


def test_without_a_token_nothing_starts(server: Server, world: Path) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.post(f"{server.url}/v1/evaluations", json={"model": "champion"}, headers=headers, timeout=30)
        assert r.status_code == 401
        assert httpx.get(f"{server.url}/v1/evaluations/abc", headers=headers, timeout=30).status_code == 401
    assert evaluation_runs(world) == []


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"model": "7"}, 422, "version 7 of 'driftloop-model' does not exist"),
        ({"model": "staging"}, 422, "model 'staging': no such alias"),
        ({"model": "/etc"}, 422, "model: not an alias, a version number or a model folder under api.model_roots"),
        ({"model": "1", "window": "fortnight"}, 422, "window 'fortnight': expected Nd, Nh"),
        ({"model": "1", "suites": ["canry"]}, 422, "suite 'canry' is not configured; did you mean canary?"),
        ({"model": "1", "colour": "red"}, 422, "colour: unknown key"),
        (b"{not json", 400, "body: malformed JSON"),
    ],
)
def test_bad_requests_get_one_line_and_start_nothing(server: Server, world: Path, body, status, message) -> None:
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(f"{server.url}/v1/evaluations", headers=AUTH, timeout=30, **kw)
    assert r.status_code == status and message in r.json()["detail"]
    assert evaluation_runs(world) == []


def test_unknown_id_is_404(server: Server) -> None:
    assert httpx.get(f"{server.url}/v1/evaluations/0123abcd", headers=AUTH, timeout=30).status_code == 404


@pytest.mark.slow
def test_post_returns_an_id_whose_results_arrive_and_match_mlflow(server: Server, world: Path) -> None:
    t0 = time.monotonic()
    r = httpx.post(
        f"{server.url}/v1/evaluations",
        headers=AUTH,
        timeout=30,
        json={"model": "champion", "suites": ["canary"], "window": "2d"},
    )
    assert r.status_code == 202, r.text
    assert time.monotonic() - t0 < 10  # answered at once, not after the evaluation
    run_id = r.json()["id"]
    assert r.json()["status"] == "queued" and run_id in r.json()["link"]

    # The only slot is taken: a second request is refused with 429 and starts nothing.
    busy = httpx.post(f"{server.url}/v1/evaluations", headers=AUTH, json={"model": "1"}, timeout=30)
    assert busy.status_code == 429 and busy.headers["retry-after"] == "60"
    assert "evaluation queue full" in busy.json()["detail"]

    body = wait_done(server.url, run_id)
    assert body["status"] == "finished", body.get("error")
    assert (body["model"], body["version"], body["window"], body["requested_by"]) == ("champion", "1", "2d", "api")
    res = body["results"]
    assert res["run_id"] == run_id and res["monitor"]["n_current"] == 60
    canary = res["suites"]["canary"][0]
    assert canary["name"] == CANARY and canary["n"] == 6

    tr = Tracker.from_config(load_config(world))
    run = tr.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["driftloop.kind"] == "evaluation"
    m = run.data.metrics
    assert (m[f"benchmark/{CANARY}"], m[f"benchmark/{CANARY}/ci_low"], m[f"benchmark/{CANARY}/ci_high"]) == (
        canary["value"],
        canary["ci_low"],
        canary["ci_high"],
    )
    assert len(evaluation_runs(world)) == 1

    # The status lives in MLflow: a new server process (here: a new app) answers the same.
    other = Server(world)
    try:
        again = httpx.get(f"{other.url}/v1/evaluations/{run_id}", headers=AUTH, timeout=30).json()
    finally:
        other.stop()
    assert again == body


@pytest.mark.slow
def test_a_failed_evaluation_reports_its_reason(server: Server, world: Path, tmp_path: Path) -> None:
    """A model folder whose weights are unreadable passes validation but fails when lm-eval loads it."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "gpt2", "n_layer": "many"}')
    r = post_when_free(server.url, {"model": str(broken), "suites": ["canary"]})
    assert r.status_code == 202, r.text
    body = wait_done(server.url, r.json()["id"])
    assert body["status"] == "failed" and body["error"] and "\n" not in body["error"]
    assert "results" not in body


def test_an_evaluation_whose_api_process_died_is_answered_failed_and_marked_killed(server: Server, world: Path) -> None:
    tr = Tracker.from_config(load_config(world))
    tags = {"driftloop.kind": "evaluation", "driftloop.model": "champion"}
    # What a SIGKILLed API process leaves behind: a queued run whose last heartbeat is an hour old...
    stale = tr.start_run("evaluate-champion", tags={**tags, "driftloop.heartbeat": f"{time.time() - 3600:.0f}"})
    tr.set_run_status(stale, "SCHEDULED")
    # ...and a running one whose owner (another replica) is alive.
    alive = tr.start_run("evaluate-champion", tags={**tags, "driftloop.heartbeat": f"{time.time():.0f}"})
    body = httpx.get(f"{server.url}/v1/evaluations/{stale}", headers=AUTH, timeout=30).json()
    assert body["status"] == "failed" and body["error"].startswith("lost: no heartbeat since "), body
    assert tr.run_record(stale)["status"] == "KILLED"  # recorded: the MLflow UI and every replica agree
    assert httpx.get(f"{server.url}/v1/evaluations/{alive}", headers=AUTH, timeout=30).json()["status"] == "running"
    assert tr.run_record(alive)["status"] == "RUNNING"
    tr.end_run(alive)


def test_the_runner_marks_the_evaluations_it_holds_alive(world: Path) -> None:
    from driftloop.app.api.evaluations import HEARTBEAT, EvaluationRunner

    cfg = load_config(
        world,
        overrides={"api": {"token": TOKEN, "evaluation_heartbeat_seconds": 0.2, "evaluation_lost_after_seconds": 1}},
    )
    runner = EvaluationRunner(cfg, str(world))
    run_id = runner.tracker.start_run(
        "evaluate-champion", tags={"driftloop.kind": "evaluation", HEARTBEAT: f"{time.time() - 5:.0f}"}
    )
    runner._queued[run_id] = None  # held by this process, as submit() holds a queued evaluation
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while float(runner.tracker.run_record(run_id)["tags"][HEARTBEAT]) < time.time() - 3:
            assert time.monotonic() < deadline, "no heartbeat recorded"
            time.sleep(0.1)
        assert runner.status(run_id)["status"] == "running"  # its own: never judged lost
        runner._queued.clear()
        time.sleep(2.5)  # no more beats: the heartbeat ages past evaluation_lost_after_seconds
        assert runner.status(run_id)["status"] == "failed"
    finally:
        runner.shutdown()
