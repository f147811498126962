"""`POST /v1/hooks/mlflow`: MLflow registry webhooks start an evaluation of each new version.

MLflow 3 signs each delivery (mlflow/webhooks/delivery.py) with three headers:
`X-MLflow-Delivery-Id`, `X-MLflow-Timestamp` (Unix seconds) and `X-MLflow-Signature`
= `v1,` + base64(HMAC-SHA256(secret, f"{delivery_id}.{timestamp}.{body}")). The receiver
recomputes it over the raw body with `api.mlflow_webhook_secret`, compares in constant
time, and refuses (401) a missing or wrong signature and a timestamp more than
`api.mlflow_webhook_tolerance_s` away from now (a replay). The delivery id is claimed in
one INSERT into the store's `webhook_delivery` table (its primary key), so of several
deliveries of one id, also concurrent ones on several replicas, exactly one starts an
evaluation; the others get 200 and the id of that evaluation. A delivery whose
evaluation is refused (422, 429) gives its claim up, so MLflow's retry can start it.

For the configured registered model (`tracking.registered_model`):
- `model_version.created` starts an evaluation of that version, exactly as
  `POST /v1/evaluations` with `{"model": "<version>"}` does, and answers 202 with its id;
- `model_version_alias.created` does the same for aliases listed in
  `api.mlflow_webhook_aliases` (e.g. `champion` moved by hand in the MLflow UI);
- anything else (another model, another event, MLflow's test delivery) gets 200 and
  `{"ignored": "<reason>"}`.

    >>> client.create_webhook(name="driftloop", url="https://driftloop.example/v1/hooks/mlflow",
    ...                       events=["model_version.created"], secret=SECRET)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from driftloop.app.api.bodies import documented_body, load_json, read_body
from driftloop.app.api.deps import ConfigDep, RunnerDep, StoreDep
from driftloop.app.api.evaluations import EvaluationRunner, start_evaluation
from driftloop.core import tags as T
from driftloop.services.evaluation import EvaluationRequest
from driftloop.store import Store

router = APIRouter()

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"


class MlflowWebhookData(BaseModel):
    name: str | None = Field(default=None, description="The registered model.")
    version: str | int | None = Field(default=None, description="The model version.")
    alias: str | None = Field(default=None, description="The alias (model_version_alias events).")


class MlflowWebhookPayload(BaseModel):
    """An MLflow registry webhook delivery (mlflow/webhooks), signed over its raw bytes."""

    entity: str | None = Field(default=None, description="model_version, model_version_alias, ...")
    action: str | None = Field(default=None, description="created, ...")
    data: MlflowWebhookData | dict[str, Any] | None = None
    timestamp: str | None = None


class WebhookEvaluation(BaseModel):
    """202: the delivery started an evaluation (as POST /v1/evaluations would)."""

    id: str = Field(description="The evaluation's MLflow run id; GET /v1/evaluations/{id} answers its status.")
    status: str = "queued"
    link: str
    version: str = Field(description="The model version evaluated.")
    reason: str = Field(description="The event that started it.")


class WebhookIgnored(BaseModel):
    """200: a verified delivery that starts no evaluation (another model, another event, a test)."""

    ignored: str


class WebhookDuplicate(BaseModel):
    """200: a delivery id already received; `id` is the evaluation the first one started (null while starting)."""

    id: str | None
    duplicate: bool = True
    reason: str


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's signature of a delivery: `v1,` + base64 HMAC-SHA256 over `id.timestamp.body`."""
    content = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode("utf-8"), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify(secret: str, headers, body: bytes, tolerance_s: float, now: float | None = None) -> str:
    """The delivery id of a correctly signed, fresh delivery; a one-line reason (ValueError) otherwise."""
    delivery_id, ts, given = (headers.get(h, "") for h in (DELIVERY_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER))
    if not (delivery_id and ts and given):
        raise ValueError(f"missing {SIGNATURE_HEADER}, {TIMESTAMP_HEADER} or {DELIVERY_HEADER} header")
    try:
        age = (time.time() if now is None else now) - int(ts)
    except ValueError:
        raise ValueError(f"{TIMESTAMP_HEADER}: not Unix seconds") from None
    expected = sign(secret, delivery_id, ts, body)
    # Standard Webhooks allows several space-separated signatures (secret rotation).
    if not any(hmac.compare_digest(s.encode(), expected.encode()) for s in given.split()):
        raise ValueError("signature does not match")
    if abs(age) > tolerance_s:
        raise ValueError(f"{TIMESTAMP_HEADER} is {age:.0f} s away from now (tolerance {tolerance_s:g} s)")
    return delivery_id


def _version_to_evaluate(cfg, doc: dict) -> tuple[str | None, str]:
    """(version, why) for a verified delivery: a version to evaluate, or None and the reason to ignore it."""
    event = f"{doc.get('entity', '')}.{doc.get('action', '')}"
    data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
    name, version = data.get("name"), str(data.get("version") or "")
    if name != cfg.tracking.registered_model:
        return None, f"model {name!r} is not driftloop's registered model {cfg.tracking.registered_model!r}"
    if event == "model_version.created" and version.isdigit():
        return version, f"{event}: version {version}"
    if event == "model_version_alias.created" and version.isdigit():
        alias = data.get("alias", "")
        if alias in cfg.api.mlflow_webhook_aliases:
            return version, f"{event}: alias {alias} -> version {version}"
        return None, f"alias {alias!r} is not in api.mlflow_webhook_aliases"
    return None, f"event {event} does not start an evaluation"


def _claim(store: Store, runner: EvaluationRunner, delivery_id: str) -> str | None:
    """None for the one delivery that claims `delivery_id` (one INSERT in the shared store, so any
    replica); for every other, the evaluation the first one started ('' while it is starting)."""
    if store.claim_delivery(delivery_id):
        return None
    earlier = store.delivery_run(delivery_id)
    if not earlier:  # claimed before the table existed: the run tag says
        earlier = runner.tracker.run_with_tag(T.MLFLOW_DELIVERY, delivery_id) or ""
    return earlier


def _start_claimed(
    store: Store, runner: EvaluationRunner, delivery_id: str, version: str, why: str
) -> WebhookEvaluation:
    """Start the evaluation of a claimed delivery (its id); a refusal (422, 429, 503) gives the claim
    up for MLflow's retry."""
    try:
        accepted = start_evaluation(
            runner,
            EvaluationRequest(model=version),
            "mlflow-webhook",
            {T.MLFLOW_DELIVERY: delivery_id, T.MLFLOW_EVENT: why[:250]},
        )
    except BaseException:
        store.settle_delivery(delivery_id, None)
        raise
    store.settle_delivery(delivery_id, accepted.id)
    return WebhookEvaluation(id=accepted.id, status=accepted.status, link=accepted.link, version=version, reason=why)


@router.post(
    "/v1/hooks/mlflow",
    openapi_extra=documented_body(MlflowWebhookPayload),
    responses={
        200: {"model": WebhookIgnored | WebhookDuplicate, "description": "Ignored, or a repeated delivery."},
        202: {"model": WebhookEvaluation, "description": "An evaluation started."},
    },
)
async def mlflow_hook(request: Request, cfg: ConfigDep, store: StoreDep, runner: RunnerDep) -> JSONResponse:
    """Verify an MLflow registry webhook and start an evaluation of the version it names."""
    secret = cfg.api.mlflow_webhook_secret
    if secret is None or not secret.get_secret_value():
        raise HTTPException(503, "api.mlflow_webhook_secret: not set; the MLflow webhook receiver is off")
    body = await read_body(request, cfg.api.max_evaluation_body_bytes)
    try:
        delivery_id = verify(secret.get_secret_value(), request.headers, body, cfg.api.mlflow_webhook_tolerance_s)
    except ValueError as e:
        raise HTTPException(401, f"MLflow webhook refused: {e}") from None
    if not (
        delivery_id.replace("-", "").isascii() and delivery_id.replace("-", "").isalnum() and len(delivery_id) <= 128
    ):
        raise HTTPException(400, f"{DELIVERY_HEADER}: not a delivery id")
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise HTTPException(400, "body: not a webhook payload")
    version, why = _version_to_evaluate(cfg, doc)
    if version is None:
        return JSONResponse(WebhookIgnored(ignored=why).model_dump())
    earlier = await run_in_threadpool(_claim, store, runner, delivery_id)
    if earlier is not None:
        dup = WebhookDuplicate(id=earlier or None, reason=f"delivery {delivery_id} already received")
        return JSONResponse(dup.model_dump())
    started = await run_in_threadpool(_start_claimed, store, runner, delivery_id, version, why)
    return JSONResponse(started.model_dump(), status_code=202)
