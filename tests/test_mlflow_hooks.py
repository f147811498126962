"""The MLflow registry webhook receiver: the signature recipe against MLflow's own signing code,
then end to end: a real `mlflow server` on loopback with a webhook registered by
`MlflowClient.create_webhook` pointing at the driftloop API on loopback; registering a model
version makes the API evaluate that version."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import wait_healthy
from mlflow.webhooks.delivery import _generate_hmac_signature
from test_api_evaluations import AUTH, Server, wait_done
from test_api_feedback import free_port
from test_evaluate import CANARY, make_world

from driftloop.app.api.mlflow_hooks import _version_to_evaluate, sign, verify
from driftloop.core.config import load_config
from driftloop.tracking import Tracker

SECRET = "whsec-for-tests"
MODEL = "driftloop-model"


def signed(payload: dict, secret: str = SECRET, ts: int | None = None, delivery: str | None = None):
    """(body, headers) of a delivery signed exactly as MLflow signs it (its own function)."""
    body = json.dumps(payload)
    delivery = delivery or str(uuid.uuid4())
    ts = str(int(time.time()) if ts is None else ts)
    return body.encode(), {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery, ts, body),
    }


def created(version: str, name: str = MODEL) -> dict:
    return {
        "entity": "model_version",
        "action": "created",
        "timestamp": "2026-11-26T00:00:00+00:00",
        "data": {
            "name": name,
            "version": version,
            "source": "models:/x",
            "run_id": None,
            "tags": {},
            "description": None,
        },
    }


# ------------------------------------------------------------------ the recipe
def test_signature_matches_mlflows_own() -> None:
    body, headers = signed(created("3"))
    assert (
        sign(SECRET, headers["X-MLflow-Delivery-Id"], headers["X-MLflow-Timestamp"], body)
        == headers["X-MLflow-Signature"]
    )
    assert verify(SECRET, headers, body, tolerance_s=300) == headers["X-MLflow-Delivery-Id"]


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (lambda b, h: (b + b" ", h), "signature does not match"),
        (
            lambda b, h: (b, {**h, "X-MLflow-Signature": "v1," + base64.b64encode(b"x" * 32).decode()}),
            "signature does not match",
        ),
        (lambda b, h: signed(json.loads(b), secret="another-secret"), "signature does not match"),
        (lambda b, h: (b, {k: v for k, v in h.items() if k != "X-MLflow-Signature"}), "missing"),
        (
            lambda b, h: (b, {**h, "X-MLflow-Timestamp": str(int(h["X-MLflow-Timestamp"]) + 1)}),
            "signature does not match",
        ),
        (lambda b, h: signed(json.loads(b), ts=int(time.time()) - 301), "s away from now (tolerance 300 s)"),
        (lambda b, h: signed(json.loads(b), ts=int(time.time()) + 400), "s away from now (tolerance 300 s)"),
    ],
)
def test_tampered_missing_and_stale_deliveries_are_refused(tamper, reason) -> None:
    body, headers = tamper(*signed(created("3")))
    with pytest.raises(ValueError, match=re.escape(reason)):
        verify(SECRET, headers, body, tolerance_s=300)


def test_one_valid_signature_among_several_is_enough() -> None:
    """Standard Webhooks rotation: the header may carry several space-separated signatures."""
    body, headers = signed(created("3"))
    headers["X-MLflow-Signature"] = "v1,bm9wZQ== " + headers["X-MLflow-Signature"]
    assert verify(SECRET, headers, body, tolerance_s=300)


@pytest.mark.parametrize(
    "payload, version",
    [
        (created("4"), "4"),
        (
            {
                "entity": "model_version_alias",
                "action": "created",
                "data": {"name": MODEL, "alias": "champion", "version": "3"},
            },
            "3",
        ),
        (
            {
                "entity": "model_version_alias",
                "action": "created",
                "data": {"name": MODEL, "alias": "challenger", "version": "3"},
            },
            None,
        ),
        ({"entity": "model_version_alias", "action": "deleted", "data": {"name": MODEL, "alias": "champion"}}, None),
        (
            {
                "entity": "model_version_tag",
                "action": "set",
                "data": {"name": MODEL, "version": "3", "key": "k", "value": "v"},
            },
            None,
        ),
        (created("4", name="other"), None),
    ],
)
def test_which_events_start_an_evaluation(payload, version) -> None:
    """model_version.created always; an alias move only for the aliases listed in the config."""
    cfg = load_config(None, env={}, check_files=False, overrides={"api": {"mlflow_webhook_aliases": ["champion"]}})
    assert _version_to_evaluate(cfg, payload)[0] == version


# ------------------------------------------------------------------ end to end with `mlflow server`
@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (SQLite, proxied artifacts) on loopback that may call http://127.0.0.1."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {
        **os.environ,
        # MLflow sends webhooks only to public https addresses unless told otherwise (local testing).
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        # The server caches the webhook list per event for 60 s; 1 s lets a new webhook take effect.
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
        # Webhook secrets are stored encrypted with this key (a random one per process otherwise).
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": base64.urlsafe_b64encode(b"k" * 32).decode(),
    }
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp / 'mlflow.db'}",
            "--artifacts-destination",
            str(tmp / "artifacts"),
        ],
        cwd=tmp,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "server.log", "wb"),
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(f"{url}/health", proc, tmp / "server.log")
    yield url
    proc.terminate()
    proc.wait(20)


@pytest.fixture(scope="module")
def hooked(tmp_path_factory, demo_model: Path, mlflow_server: str, prefect_harness, one_torch_thread):
    """(API server, config path, MLflow client): driftloop tracks to the MLflow server, version 1
    is registered, and a webhook for model_version.created points at the API."""
    from mlflow import MlflowClient

    world = make_world(tmp_path_factory.mktemp("hooks"), demo_model, extra=f"tracking: {{uri: '{mlflow_server}'}}")
    api = Server(world, mlflow_webhook_secret=SECRET)
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    client.create_webhook(
        name="driftloop", url=f"{api.url}/v1/hooks/mlflow", events=["model_version.created"], secret=SECRET
    )
    yield api, world, client
    api.stop()


def evaluation_runs(cfg_path: Path) -> list:
    tr = Tracker.from_config(load_config(cfg_path))
    return tr.client.search_runs([tr.experiment_id], filter_string="tags.`driftloop.kind` = 'evaluation'")


def hook(api: Server, body: bytes, headers: dict) -> httpx.Response:
    return httpx.post(f"{api.url}/v1/hooks/mlflow", content=body, headers=headers, timeout=30)


@pytest.mark.slow
def test_bad_or_stale_signatures_get_401_and_start_nothing(hooked) -> None:
    api, world, _ = hooked
    body, headers = signed(created("1"), secret="not-the-secret")
    r = hook(api, body, headers)
    assert r.status_code == 401 and "signature does not match" in r.json()["detail"]
    body, headers = signed(created("1"), ts=int(time.time()) - 3600)
    assert hook(api, body, headers).status_code == 401
    body, _ = signed(created("1"))
    assert hook(api, body, {"Content-Type": "application/json"}).status_code == 401
    assert hook(api, body, AUTH).status_code == 401  # the API token is no substitute for MLflow's signature
    assert evaluation_runs(world) == []


@pytest.mark.slow
def test_other_models_and_events_are_ignored_with_a_reason(hooked) -> None:
    api, world, _ = hooked
    cases = [
        (created("1", name="someone-elses-model"), "is not driftloop's registered model 'driftloop-model'"),
        (
            {"entity": "registered_model", "action": "created", "data": {"name": MODEL}},
            "event registered_model.created does not",
        ),
        (
            {
                "entity": "model_version_alias",
                "action": "created",
                "data": {"name": MODEL, "alias": "staging", "version": "1"},
            },
            "alias 'staging' is not in api.mlflow_webhook_aliases",
        ),
    ]
    for payload, reason in cases:
        r = hook(api, *signed(payload))
        assert r.status_code == 200 and reason in r.json()["ignored"]
    assert evaluation_runs(world) == []


@pytest.mark.slow
def test_registering_a_version_in_mlflow_starts_its_evaluation(hooked, demo_model: Path) -> None:
    api, world, client = hooked
    time.sleep(1.5)  # past the server's 1 s webhook cache, which still holds "no webhooks" from version 1
    tr = Tracker.from_config(load_config(world))
    run = tr.start_run("register-v2")
    assert tr.register_model(run, demo_model) == "2"
    tr.end_run(run)

    deadline = time.monotonic() + 60
    while not (runs := evaluation_runs(world)):
        assert time.monotonic() < deadline, "no evaluation was started by the webhook"
        time.sleep(0.3)
    (started,) = runs
    tags = started.data.tags
    assert tags["driftloop.requested_by"] == "mlflow-webhook" and tags["driftloop.model"] == "2"
    body = wait_done(api.url, started.info.run_id)
    assert body["status"] == "finished", body.get("error")
    assert body["version"] == "2" and body["results"]["suites"]["canary"][0]["name"] == CANARY

    # MLflow retries a delivery it thinks failed: the same delivery id starts nothing new.
    again = hook(api, *signed(created("2"), delivery=tags["driftloop.mlflow_delivery"]))
    assert again.status_code == 200 and again.json() == {
        "id": started.info.run_id,
        "duplicate": True,
        "reason": f"delivery {tags['driftloop.mlflow_delivery']} already received",
    }
    assert len(evaluation_runs(world)) == 1


def test_without_a_secret_the_receiver_is_off(tmp_path: Path) -> None:
    cfg = tmp_path / "driftloop.yaml"
    cfg.write_text("state_dir: state\n")
    api = Server(cfg)
    try:
        r = hook(api, *signed(created("1")))
    finally:
        api.stop()
    assert r.status_code == 503 and "api.mlflow_webhook_secret: not set" in r.json()["detail"]
