"""The API's OpenAPI schema names every route's request and response model; with PREFECT_API_URL
set, POST /v1/evaluations submits a run of the `evaluate/on-demand` deployment for the MLflow
run it created (Prefect's `run_deployment` is a fake that checks its arguments against the real
one and the deployment's parameters against the flow), and GET resolves the id it answered."""

from __future__ import annotations

import inspect
import threading
import uuid

import pytest
from fastapi.testclient import TestClient

from driftloop.app.api import create_app
from driftloop.app.api.deps import get_runner
from driftloop.core.config import load_config

TOKEN = "openapi-t0ken-all-scopes"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODEL = "driftloop-model"


class FakeTracker:
    """Registry versions 1 and 2, alias champion; runs kept in memory with their tags and status."""

    model_name = MODEL

    def __init__(self) -> None:
        self.runs: dict[str, dict] = {}
        self.lock = threading.Lock()

    def version_exists(self, v: str) -> bool:
        return v in ("1", "2")

    def alias_version(self, alias: str) -> str | None:
        return "1" if alias == "champion" else None

    def start_run(self, name: str, tags: dict) -> str:
        run_id = uuid.uuid4().hex
        with self.lock:
            self.runs[run_id] = {"status": "RUNNING", "tags": dict(tags)}
        return run_id

    def set_run_status(self, run_id: str, status: str) -> None:
        self.runs[run_id]["status"] = status

    def set_tags(self, run_id: str, tags: dict) -> None:
        self.runs[run_id]["tags"].update(tags)

    def run_link(self, run_id: str) -> str:
        return f"#/runs/{run_id}"

    def run_record(self, run_id: str) -> dict | None:
        return self.runs.get(run_id)

    def run_with_tag(self, key: str, value: str) -> str | None:
        return next((r for r, v in self.runs.items() if v["tags"].get(key) == value), None)


def make_app(store, **api):
    cfg = load_config(
        None,
        env={},
        check_files=False,
        overrides={"tracking": {"registered_model": MODEL}, "api": {"token": TOKEN, "docs": True, **api}},
    )
    app = create_app(cfg, store=store)
    tracker = FakeTracker()
    app.state.evaluations._tracker = tracker
    return app, tracker


def test_openapi_names_every_routes_request_and_response_model(store):
    app, _ = make_app(store)
    with TestClient(app) as client:
        doc = client.get("/openapi.json").json()

    def body(path: str, method: str) -> str | None:
        ref = doc["paths"][path][method].get("requestBody", {}).get("content", {}).get("application/json", {})
        return ref.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1] or None

    def answer(path: str, method: str, code: str) -> list[str]:
        schema = doc["paths"][path][method]["responses"][code]["content"]["application/json"]["schema"]
        refs = [schema] if "$ref" in schema else schema.get("anyOf", [])
        return [r["$ref"].rsplit("/", 1)[-1] for r in refs]

    assert body("/v1/feedback", "post") == "FeedbackRequest"
    assert answer("/v1/feedback", "post", "200") == ["FeedbackResponse"]
    assert body("/v1/evaluations", "post") == "EvaluationRequest"
    assert answer("/v1/evaluations", "post", "202") == ["EvaluationAccepted"]
    assert answer("/v1/evaluations/{run_id}", "get", "200") == ["EvaluationStatus"]
    assert body("/v1/hooks/mlflow", "post") == "MlflowWebhookPayload"
    assert answer("/v1/hooks/mlflow", "post", "202") == ["WebhookEvaluation"]
    assert answer("/v1/hooks/mlflow", "post", "200") == ["WebhookIgnored", "WebhookDuplicate"]
    schemas = doc["components"]["schemas"]
    # Every schema a route refers to is in the components, nested ones included.
    for name in ("FeedbackRequest", "FeedbackEventIn", "FeedbackBatch", "EvaluationRequest", "MlflowWebhookData"):
        assert name in schemas, name
    assert set(schemas["EvaluationRequest"]["properties"]) == {"model", "suites", "window"}
    assert schemas["EvaluationRequest"].get("additionalProperties") is False
    # The bearer token is declared for the routes that need one.
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, method in (("/v1/feedback", "post"), ("/v1/evaluations", "post"), ("/v1/evaluations/{run_id}", "get")):
        assert doc["paths"][path][method]["security"] == [{"HTTPBearer": []}]


@pytest.fixture
def fake_run_deployment(monkeypatch):
    """Replace Prefect's run_deployment: record each call after binding it to the real signature."""
    import prefect.deployments

    real = prefect.deployments.run_deployment
    calls: list[dict] = []
    state = {"fail": None}

    class FlowRun:
        def __init__(self) -> None:
            self.id = uuid.uuid4()

    def fake(*args, **kwargs):
        inspect.signature(real).bind(*args, **kwargs)  # only arguments the real one takes
        calls.append(kwargs)
        if state["fail"]:
            raise state["fail"]
        return FlowRun()

    monkeypatch.setattr(prefect.deployments, "run_deployment", fake)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    return calls, state


def test_with_prefect_api_post_submits_the_on_demand_deployment_for_its_run(store, fake_run_deployment):
    from flows.evaluate import evaluate

    calls, _ = fake_run_deployment
    app, tracker = make_app(store)
    with TestClient(app) as client:
        assert app.state.evaluations.via_prefect
        r = client.post("/v1/evaluations", json={"model": "2", "suites": ["canary"], "window": "7d"}, headers=AUTH)
        assert r.status_code == 202, r.text
        run_id = r.json()["id"]
        assert r.json() == {"id": run_id, "status": "queued", "link": f"#/runs/{run_id}"}
        assert len(calls) == 1
        call = calls[0]
        assert call["name"] == "evaluate/on-demand" and call["timeout"] == 0
        assert call["parameters"] == {"model": "2", "run_id": run_id, "suites": ["canary"], "window": "7d"}
        inspect.signature(evaluate.fn).bind(**call["parameters"])  # the flow takes exactly these
        run = tracker.runs[run_id]
        assert run["status"] == "SCHEDULED" and "driftloop.heartbeat" not in run["tags"]
        assert run["tags"]["driftloop.prefect_flow_run"]
        # The id resolves: GET answers from the MLflow run the flow will fill.
        g = client.get(f"/v1/evaluations/{run_id}", headers=AUTH)
        assert g.status_code == 200, g.text
        assert g.json()["status"] == "queued" and g.json()["model"] == "2" and g.json()["suites"] == ["canary"]
        assert "results" not in g.json() and "error" not in g.json()
        # An empty body evaluates the champion; no suites or window means the flow's defaults.
        r = client.post("/v1/evaluations", content=b"", headers=AUTH)
        assert r.status_code == 202, r.text
        assert calls[1]["parameters"] == {"model": "champion", "run_id": r.json()["id"]}
        # Bad input is refused before anything is submitted.
        r = client.post("/v1/evaluations", json={"model": "7"}, headers=AUTH)
        assert r.status_code == 422 and len(calls) == 2


def test_a_refusal_by_prefect_is_503_and_the_run_is_marked_failed(store, fake_run_deployment):
    calls, state = fake_run_deployment
    state["fail"] = RuntimeError("deployment evaluate/on-demand not found")
    app, tracker = make_app(store)
    with TestClient(app) as client:
        r = client.post("/v1/evaluations", json={"model": "1"}, headers=AUTH)
        assert r.status_code == 503 and "not found" in r.json()["detail"]
        assert r.headers["retry-after"] == "60"
        (run_id,) = tracker.runs
        assert tracker.runs[run_id]["status"] == "KILLED"
        g = client.get(f"/v1/evaluations/{run_id}", headers=AUTH).json()
        assert g["status"] == "failed" and "Prefect did not take" in g["error"]


def test_without_prefect_api_the_in_process_pool_runs_evaluations(store, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    app, _ = make_app(store)
    with TestClient(app):
        assert not app.state.evaluations.via_prefect


def test_dependencies_can_be_overridden(store):
    """Routes take the runner from `deps.get_runner`: an override reaches them."""
    app, tracker = make_app(store)

    class Runner:
        def status(self, run_id: str) -> dict:
            return {
                "id": run_id,
                "status": "running",
                "model": "1",
                "version": "1",
                "window": "",
                "suites": [],
                "requested_by": "api",
                "link": "#",
            }

    app.dependency_overrides[get_runner] = Runner
    with TestClient(app) as client:
        g = client.get("/v1/evaluations/abc123", headers=AUTH)
        assert g.status_code == 200 and g.json()["status"] == "running" and "results" not in g.json()
