"""The HTTP routes under hostile input: never a 5xx, nothing written; bounded evaluations; model
folders only under api.model_roots; token scopes; one evaluation per webhook delivery id, however
many race.

The server is a real uvicorn on loopback; MLflow is a fake tracker that counts the evaluations
started (its `start_run` is slow on purpose, so racing deliveries overlap).
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx
import pytest
import uvicorn
from test_api_feedback import free_port

from driftloop.app.api import create_app
from driftloop.app.api.evaluations import EvaluationRunner
from driftloop.app.api.mlflow_hooks import sign
from driftloop.core.config import load_config

TOKEN = "hardening-t0ken-all-scopes"
INGEST = "hardening-t0ken-ingest-only"
EVALUATE = "hardening-t0ken-evaluate-only"
SECRET = "whsec-hardening"
TS = "2026-11-01T10:00:00+00:00"
MODEL = "driftloop-model"


class FakeTracker:
    """The registry has versions 1 and 2 and the alias champion; `start_run` counts evaluations."""

    model_name = MODEL

    def __init__(self) -> None:
        self.runs: list[dict] = []
        self.lock = threading.Lock()

    def version_exists(self, v: str) -> bool:
        return v in ("1", "2")

    def alias_version(self, alias: str) -> str | None:
        return "1" if alias == "champion" else None

    def start_run(self, name: str, tags: dict) -> str:
        time.sleep(0.2)  # as slow as a remote MLflow: racing deliveries overlap here
        with self.lock:
            self.runs.append(tags)
            return f"run{len(self.runs)}"

    def set_run_status(self, run_id: str, status: str) -> None:
        pass

    def set_tags(self, run_id: str, tags: dict) -> None:
        pass

    def run_link(self, run_id: str) -> str:
        return f"#/runs/{run_id}"

    def run_with_tag(self, key: str, value: str) -> str | None:
        with self.lock:
            return next((f"run{i + 1}" for i, t in enumerate(self.runs) if t.get(key) == value), None)

    def run_record(self, run_id: str) -> None:
        return None


@pytest.fixture
def api(store, tmp_path, monkeypatch):
    """(base URL, store, fake tracker, model root) of a server with three tokens and one model root."""
    monkeypatch.setenv("HARDENING_INGEST_TOKEN", INGEST)
    monkeypatch.setenv("HARDENING_EVALUATE_TOKEN", EVALUATE)
    monkeypatch.setattr(
        EvaluationRunner, "_run", lambda self, run_id, req: (self._queued.pop(run_id, None), self.slots.release())
    )
    root = tmp_path / "models"
    (root / "good").mkdir(parents=True)
    (root / "good" / "config.json").write_text("{}")
    cfg = load_config(
        None,
        env={},
        check_files=False,
        overrides={
            "tracking": {"registered_model": MODEL},
            "api": {
                "token": TOKEN,
                "max_body_bytes": 64 * 1024,
                "max_evaluation_body_bytes": 4096,
                "max_evaluation_window_days": 30,
                "model_roots": [str(root)],
                "max_queued_evaluations": 50,
                "mlflow_webhook_secret": SECRET,
                "tokens": [
                    {"token_env": "HARDENING_INGEST_TOKEN", "scopes": ["ingest"]},
                    {"token_env": "HARDENING_EVALUATE_TOKEN", "scopes": ["evaluate"]},
                ],
            },
        },
    )
    app = create_app(cfg, store=store)
    tracker = FakeTracker()
    app.state.evaluations._tracker = tracker
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", store, tracker, root
    srv.should_exit = True
    t.join(10)


def nested(depth: int, leaf: str = "1") -> bytes:
    return ("[" * depth + leaf + "]" * depth).encode()


def nested_object(depth: int) -> bytes:
    return ('{"a":' * depth + "1" + "}" * depth).encode()


def event(**kw) -> dict:
    return {"ts": TS, "prompt": "q", **kw}


CORPUS: list[bytes] = [
    b"",
    b"   ",
    b"{",
    b"[",
    b"}",
    b"null",
    b"true",
    b"1",
    b'"text"',
    b"[]",
    b"{}",
    b"[[]]",
    nested(1000),
    nested(100_000),
    nested_object(1000),
    nested(1000, "{}"),
    json.dumps(event(metadata=json.loads(nested(900).decode()))).encode(),
    json.dumps({"events": [event(segment={"a": {"b": 1}})]}).encode(),
    b"\xff\xfe\x00",
    b'{"prompt": "\xed\xa0\x80"}',
    b'{"model": "\xc3"}',
    b'{"prompt": "\\ud800"}',
    b'{"model": NaN}',
    b'{"latency_ms": 1e999}',
    b'{"tokens_in": ' + b"9" * 400 + b"}",
    json.dumps({"model": "m" * 300}).encode(),
    json.dumps({"model": "a/" * 300}).encode(),
    json.dumps({"model": "x" * 100_000}).encode(),
    json.dumps({"model": "../../../../etc"}).encode(),
    json.dumps({"model": "/etc/passwd"}).encode(),
    json.dumps({"model": "~root"}).encode(),
    json.dumps({"model": "a\x00b"}).encode(),
    json.dumps({"model": 5}).encode(),
    json.dumps({"model": ["1"]}).encode(),
    json.dumps({"model": None}).encode(),
    json.dumps({"model": {"a": 1}}).encode(),
    json.dumps({"suites": "canary"}).encode(),
    json.dumps({"suites": [None, 1]}).encode(),
    json.dumps({"window": 7}).encode(),
    json.dumps({"window": "9" * 400 + "d"}).encode(),
    json.dumps({"window": "1e308d"}).encode(),
    json.dumps({"window": "0001-01-01..9999-12-31"}).encode(),
    json.dumps({"window": "x" * 100_000}).encode(),
    json.dumps({"model": "1", "window": "2026-13-45..x"}).encode(),
    json.dumps(event(event_id={"a": 1}, ts=[], prompt={})).encode(),
    json.dumps([1, "a", None, []]).encode(),
    json.dumps(event(event_id="e" * 100_000, model_version="v" * 300)).encode(),
    json.dumps(event(segment={"k" * 10_000: "v"})).encode(),
    json.dumps({"events": "x"}).encode(),
    json.dumps(
        {"entity": "model_version", "action": "created", "data": {"name": MODEL, "version": "9" * 300}}
    ).encode(),
    json.dumps({"entity": "model_version", "action": "created", "data": {"name": MODEL, "version": ["1"]}}).encode(),
    json.dumps(
        {"entity": "model_version_alias", "action": "created", "data": {"name": MODEL, "version": "1", "alias": ["x"]}}
    ).encode(),
    json.dumps({"entity": [], "action": {}, "data": []}).encode(),
]


def signed_headers(body: bytes, delivery: str | None = None) -> dict:
    delivery = delivery or str(uuid.uuid4())
    ts = str(int(time.time()))
    return {
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": sign(SECRET, delivery, ts, body),
        "Content-Type": "application/json",
    }


def test_a_corpus_of_bad_bodies_never_gets_a_5xx_and_writes_nothing_it_should_not(api):
    url, store, tracker, _ = api
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    failures = []
    with httpx.Client(timeout=30) as c:
        for i, body in enumerate(CORPUS):
            for route, headers in (
                ("/v1/feedback", auth),
                ("/v1/evaluations", auth),
                ("/v1/hooks/mlflow", signed_headers(body)),
                ("/v1/hooks/mlflow", auth),
            ):
                before = (store.count_events(), store.count_quarantine(), len(tracker.runs))
                try:
                    r = c.post(url + route, content=body, headers=headers)
                except httpx.TransportError as e:
                    failures.append(f"#{i} {route}: {type(e).__name__}")
                    continue
                after = (store.count_events(), store.count_quarantine(), len(tracker.runs))
                if r.status_code >= 500:
                    failures.append(f"#{i} {route}: {r.status_code} {r.text[:100]}")
                elif r.status_code >= 400:
                    if after != before:
                        failures.append(f"#{i} {route}: {r.status_code} but wrote {before} -> {after}")
                    if not r.json().get("detail"):
                        failures.append(f"#{i} {route}: {r.status_code} without a reason")
    assert failures == []


def test_an_evaluation_body_over_its_limit_gets_413_and_a_long_window_422(api):
    url, _, tracker, _ = api
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(f"{url}/v1/evaluations", json={"model": "1", "suites": ["s" * 5000]}, headers=auth, timeout=30)
    assert r.status_code == 413 and "over the limit of 4096 bytes" in r.json()["detail"]
    for window in ("31d", "800h", "2026-01-01..2026-03-01"):
        r = httpx.post(f"{url}/v1/evaluations", json={"model": "1", "window": window}, headers=auth, timeout=30)
        assert r.status_code == 422 and "api.max_evaluation_window_days (30)" in r.json()["detail"], r.text
    r = httpx.post(f"{url}/v1/evaluations", json={"model": "1", "window": "30d"}, headers=auth, timeout=30)
    assert r.status_code == 202 and len(tracker.runs) == 1


def test_model_folders_only_under_the_roots_and_refusals_say_nothing_of_the_file_system(api, tmp_path):
    url, _, tracker, root = api
    auth = {"Authorization": f"Bearer {TOKEN}"}
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    answers = set()
    for model in (
        str(outside),
        str(tmp_path / "missing"),
        "/etc",
        str(root / ".." / "outside"),
        "../outside",
        str(root / "missing"),
        "m" * 300,
        str(root / "good" / "config.json"),
    ):
        r = httpx.post(f"{url}/v1/evaluations", json={"model": model}, headers=auth, timeout=30)
        assert r.status_code == 422, (model, r.text)
        answers.add(r.json()["detail"])
    assert len(answers - {"model: longer than 255 characters"}) == 1  # one answer whether a path exists or not
    assert tracker.runs == []
    for model in (str(root / "good"), "./good"):  # a bare word is an alias
        r = httpx.post(f"{url}/v1/evaluations", json={"model": model}, headers=auth, timeout=30)
        assert r.status_code == 202, r.text
    assert [t["driftloop.model"] for t in tracker.runs] == [str((root / "good").resolve())] * 2


def test_token_scopes_keep_a_feedback_client_from_starting_evaluations(api):
    url, store, tracker, _ = api

    def post(route: str, token: str, body: dict) -> int:
        return httpx.post(url + route, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code

    assert post("/v1/evaluations", INGEST, {"model": "1"}) == 403
    assert post("/v1/feedback", EVALUATE, event()) == 403
    assert store.count_events() == 0 and tracker.runs == []
    assert post("/v1/feedback", INGEST, event()) == 200
    assert post("/v1/evaluations", EVALUATE, {"model": "1"}) == 202
    assert post("/v1/feedback", TOKEN, event(prompt="other")) == 200
    assert post("/v1/evaluations", TOKEN, {"model": "2"}) == 202
    assert post("/v1/feedback", "x" * 26, event()) == 401
    assert httpx.get(f"{url}/v1/evaluations/abc", headers={"Authorization": f"Bearer {INGEST}"}).status_code == 403


def test_concurrent_deliveries_of_one_id_start_one_evaluation(api):
    url, store, tracker, _ = api
    body = json.dumps(
        {"entity": "model_version", "action": "created", "data": {"name": MODEL, "version": "2"}}
    ).encode()
    delivery = str(uuid.uuid4())
    answers: list[httpx.Response] = []
    go = threading.Barrier(6)

    def deliver() -> None:
        headers = signed_headers(body, delivery)
        go.wait()
        answers.append(httpx.post(f"{url}/v1/hooks/mlflow", content=body, headers=headers, timeout=30))

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 5 + [202], [r.text for r in answers]
    assert len(tracker.runs) == 1
    assert store.delivery_run(delivery) == "run1"
    again = httpx.post(f"{url}/v1/hooks/mlflow", content=body, headers=signed_headers(body, delivery), timeout=30)
    assert again.status_code == 200 and again.json()["id"] == "run1" and again.json()["duplicate"] is True


def test_a_refused_delivery_gives_its_claim_up_for_the_retry(api):
    url, store, tracker, _ = api
    body = json.dumps(
        {"entity": "model_version", "action": "created", "data": {"name": MODEL, "version": "7"}}
    ).encode()
    delivery = str(uuid.uuid4())
    r = httpx.post(f"{url}/v1/hooks/mlflow", content=body, headers=signed_headers(body, delivery), timeout=30)
    assert r.status_code == 422 and store.delivery_run(delivery) is None


def test_docs_routes_are_off_unless_configured(api):
    url = api[0]
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(url + path, timeout=30).status_code == 404
