"""Submit on-demand evaluations to Prefect as runs of the `evaluate/on-demand` deployment.

The HTTP API (`POST /v1/evaluations`, the MLflow webhook) uses this where PREFECT_API_URL is
set in its environment: a worker on the deployment's pool then runs the `evaluate` flow, and
Prefect's work queue is the only queue. Elsewhere the API runs the flow in its own bounded
pool. Only flows/ imports Prefect, and only when a run is submitted.

    >>> flow_run_id = submit_evaluation(run_id="5f0c...", model="2", suites=["canary"], window="7d")
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

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
    with _environment_api():
        flow_run = run_deployment(
            name=DEPLOYMENT,
            parameters=parameters,
            timeout=0,
            as_subflow=False,
            idempotency_key=f"driftloop-evaluation-{run_id}",
            tags=["driftloop", "on-demand"],
        )
    return str(flow_run.id)


def flow_run_ended(flow_run_id: str) -> str | None:
    """How the flow run `flow_run_id` ended, where it ended without completing ("Crashed: the
    worker's process exited with code -9"); None while it is scheduled, pending or running, or
    when it completed (the `evaluate` flow then records its own outcome in the MLflow run).

    Raises whatever Prefect raises when its API cannot be reached or does not know the run.
    """
    import asyncio
    from uuid import UUID

    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_flow_run(UUID(flow_run_id))

    with _environment_api():
        state = asyncio.run(read()).state
    if state is None or not state.is_final() or state.is_completed():
        return None
    message = (state.message or "").strip().splitlines()
    return f"{state.name}: {message[0][:200]}" if message else state.name


@contextmanager
def _environment_api() -> Iterator[None]:
    """Prefect's client pointed at the environment's PREFECT_API_URL as it is now, the one
    `submits_to_prefect` judged by (Prefect's own settings may predate it, e.g. in a process
    that imported Prefect before the variable was set)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = os.environ.get("PREFECT_API_URL", "").strip()
    with temporary_settings(updates={PREFECT_API_URL: url} if url else {}):
        yield
