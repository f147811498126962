"""Submit on-demand evaluations to Prefect as runs of the `evaluate/on-demand` deployment.

The HTTP API (`POST /v1/evaluations`, the MLflow webhook) uses this where PREFECT_API_URL is
set in its environment: a worker on the deployment's pool then runs the `evaluate` flow, and
Prefect's work queue is the only queue. Elsewhere the API runs the flow in its own bounded
pool. Only flows/ imports Prefect, and only when a run is submitted.

    >>> flow_run_id = submit_evaluation(run_id="5f0c...", model="2", suites=["canary"], window="7d")
"""

from __future__ import annotations

import os

DEPLOYMENT = "evaluate/on-demand"  # prefect.yaml: flow `evaluate`, deployment `on-demand`


def submits_to_prefect() -> bool:
    """Whether on-demand evaluations go to Prefect: PREFECT_API_URL is set in the environment.

    Only the environment counts (not a Prefect profile or a test harness's settings), so an
    API server sends its evaluations to a work pool only where its deployment says so.
    """
    return bool(os.environ.get("PREFECT_API_URL", "").strip())


def submit_evaluation(run_id: str, model: str, suites: list[str] | None = None, window: str | None = None) -> str:
    """Create a run of the `evaluate/on-demand` deployment for the MLflow run `run_id` (created
    beforehand, in status SCHEDULED) and return at once (`timeout=0`) with the flow run's id.

    The flow's `config` is left to the deployment (null: $DRIFTLOOP_CONFIG in the worker's
    environment). Submitting twice for one `run_id` creates one flow run (its idempotency key).
    Raises whatever Prefect raises when its API refuses or cannot be reached.
    """
    from prefect.deployments import run_deployment

    parameters: dict[str, object] = {"model": model, "run_id": run_id}
    if suites is not None:
        parameters["suites"] = list(suites)
    if window is not None:
        parameters["window"] = window
    flow_run = run_deployment(
        name=DEPLOYMENT,
        parameters=parameters,
        timeout=0,
        as_subflow=False,
        idempotency_key=f"driftloop-evaluation-{run_id}",
        tags=["driftloop", "on-demand"],
    )
    return str(flow_run.id)
