"""`POST /v1/hooks/mlflow`: MLflow registry webhooks start an evaluation of each new version.

MLflow 3 signs each delivery (mlflow/webhooks/delivery.py) with three headers:
`X-MLflow-Delivery-Id`, `X-MLflow-Timestamp` (Unix seconds) and `X-MLflow-Signature`
= `v1,` + base64(HMAC-SHA256(secret, f"{delivery_id}.{timestamp}.{body}")). The receiver
recomputes it over the raw body with `api.mlflow_webhook_secret`, compares in constant
time, and refuses (401) a missing or wrong signature and a timestamp more than
`api.mlflow_webhook_tolerance_s` away from now (a replay). A delivery id already seen is
answered 200 without a second evaluation (MLflow retries on 5xx and 429).

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
import json
import time

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from driftloop.api.evaluations import start_evaluation
from driftloop.api.feedback import _body
from driftloop.evaluation import EvaluationRequest

router = APIRouter()

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"


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


def _seen(request: Request, delivery_id: str) -> str | None:
    """The evaluation an earlier delivery with this id started (any replica: it is a run tag)."""
    return request.app.state.evaluations.tracker.run_with_tag("driftloop.mlflow_delivery", delivery_id)


@router.post("/v1/hooks/mlflow")
async def mlflow_hook(request: Request) -> JSONResponse:
    """Verify an MLflow registry webhook and start an evaluation of the version it names."""
    cfg = request.app.state.cfg
    secret = cfg.api.mlflow_webhook_secret
    if secret is None or not secret.get_secret_value():
        raise HTTPException(503, "api.mlflow_webhook_secret: not set; the MLflow webhook receiver is off")
    body = await _body(request, cfg.api.max_body_bytes)
    try:
        delivery_id = verify(secret.get_secret_value(), request.headers, body, cfg.api.mlflow_webhook_tolerance_s)
    except ValueError as e:
        raise HTTPException(401, f"MLflow webhook refused: {e}") from None
    if not delivery_id.replace("-", "").isalnum():
        raise HTTPException(400, f"{DELIVERY_HEADER}: not a delivery id")
    try:
        doc = json.loads(body.decode("utf-8"))
    except ValueError:
        raise HTTPException(400, "body: malformed JSON") from None
    if not isinstance(doc, dict):
        raise HTTPException(400, "body: not a webhook payload")
    version, why = _version_to_evaluate(cfg, doc)
    if version is None:
        return JSONResponse({"ignored": why})
    earlier = await run_in_threadpool(_seen, request, delivery_id)
    if earlier:
        return JSONResponse({"id": earlier, "duplicate": True, "reason": f"delivery {delivery_id} already received"})
    resp = await run_in_threadpool(start_evaluation, request, EvaluationRequest(model=version), "mlflow-webhook",
                                   {"driftloop.mlflow_delivery": delivery_id, "driftloop.mlflow_event": why[:250]})
    out = json.loads(resp.body)
    return JSONResponse({**out, "version": version, "reason": why}, status_code=resp.status_code)
