"""`POST /v1/evaluations` and `GET /v1/evaluations/{id}`: on-demand evaluation over HTTP.

A request is validated at once (model reference, window, suites, and that the alias or
version exists in the registry), its MLflow run is created in status SCHEDULED, and the
answer is 202 with the run id. Where PREFECT_API_URL is set in the API's environment, the
evaluation is a run of the Prefect deployment `evaluate/on-demand` (flows/submit.py), given the
MLflow run id as its `run_id` parameter: a worker runs it and Prefect's work queue is the only
queue (503 when Prefect does not take it). Elsewhere the evaluation (the `evaluate` flow) runs in
a bounded pool of threads in the API process (`api.max_concurrent_evaluations`; at most
`api.max_queued_evaluations` wait, beyond that 429). Its status lives in the MLflow run
(status and tags), so any replica answers GET, also after a restart. While an evaluation is
queued or running in its pool, the API process sets the run's `driftloop.heartbeat` tag every
`api.evaluation_heartbeat_seconds`; a GET that finds the heartbeat older than
`api.evaluation_lost_after_seconds` (the process died: a crash, a SIGKILL, a lost node)
answers `failed` with the reason and marks the run KILLED, so no evaluation waits forever. A
Prefect-run evaluation is judged by its flow run instead: one that ended without completing
(its worker crashed, or it was cancelled) before the flow recorded an outcome is answered alike.

    $ curl -H "Authorization: Bearer $TOKEN" -d '{"model": "champion", "suites": ["canary"], "window": "7d"}' \\
        http://127.0.0.1:8080/v1/evaluations
    {"id": "5f0c...", "status": "queued", "link": "#/experiments/1/runs/5f0c..."}
    $ curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/v1/evaluations/5f0c...
    {"id": "5f0c...", "status": "finished", "model": "champion", "version": "3", ..., "results": {...}}
"""

from __future__ import annotations

import contextvars
import difflib
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from driftloop.app.api.auth import require_scope
from driftloop.app.api.bodies import documented_body, load_json, read_body
from driftloop.app.api.deps import ConfigDep, RunnerDep
from driftloop.app.api.periodic import Periodic
from driftloop.core import tags as T
from driftloop.core.errors import DriftloopError, InputError
from driftloop.services.evaluation import (
    KIND,
    RESULT_ARTIFACT,
    STATUS,
    EvaluationRequest,
    check_registered,
    is_model_folder,
    parse_window,
)

router = APIRouter()
logger = logging.getLogger("driftloop.app.api")
HEARTBEAT = T.HEARTBEAT  # tag: Unix time of the owner's last sign of life
PREFECT_FLOW_RUN = T.PREFECT_FLOW_RUN  # tag: the flow run of a Prefect-submitted evaluation
Status = Literal["queued", "running", "finished", "failed"]


class EvaluationAccepted(BaseModel):
    """The answer (202) to a request that starts an evaluation."""

    id: str = Field(description="The evaluation's MLflow run id; GET /v1/evaluations/{id} answers its status.")
    status: Literal["queued"] = "queued"
    link: str = Field(description="The run in the MLflow UI.")


class EvaluationStatus(BaseModel):
    """An evaluation's status; `results` once finished, `error` once failed."""

    id: str
    status: Status | str = Field(description="queued, running, finished or failed.")
    model: str = Field(description="The model reference as asked for (a folder as its resolved path).")
    version: str = Field(description="Registry version evaluated; empty for a folder or before it started.")
    window: str
    suites: list[str]
    requested_by: str = Field(description="api, mlflow-webhook, ...")
    link: str = Field(description="The run in the MLflow UI.")
    results: dict[str, Any] | None = Field(
        default=None, description="The whole EvaluationResult (evaluation.json); only once finished."
    )
    error: str | None = Field(default=None, description="One-line reason; only once failed.")


class QueueFull(Exception):
    """Every running and waiting slot is taken."""


class SubmitFailed(Exception):
    """Prefect did not take the evaluation's deployment run; the reason is the message."""


class EvaluationRunner:
    """Runs evaluations in a bounded thread pool; the MLflow run records each one's status.

    `config_path` is what the `evaluate` flow loads (flows take a path, never live objects).
    """

    def __init__(self, cfg: Any, config_path: str | None, via_prefect: bool | None = None):
        self.cfg = cfg
        self.config_path = config_path
        if via_prefect is None:
            from flows.submit import submits_to_prefect

            via_prefect = submits_to_prefect()
        self.via_prefect = via_prefect  # runs of the `evaluate/on-demand` deployment instead of the pool
        api = cfg.api
        self.pool = ThreadPoolExecutor(max_workers=api.max_concurrent_evaluations, thread_name_prefix="driftloop-eval")
        # Running plus waiting evaluations; a request that finds none free gets 429.
        self.slots = threading.BoundedSemaphore(api.max_concurrent_evaluations + api.max_queued_evaluations)
        self._tracker = None
        self._lock = threading.Lock()
        self._queued: dict[str, Any] = {}
        # Context variables of the code that built the app (Prefect keeps its settings, e.g. the
        # API URL of a test harness or profile, in them); pool threads would otherwise start empty.
        self._context = contextvars.copy_context()
        self._beats = Periodic(api.evaluation_heartbeat_seconds, self.beat, "driftloop-eval-heartbeat")

    def start(self) -> None:
        """Mark this process's queued and running evaluations alive every `api.evaluation_heartbeat_seconds`."""
        self._beats.start()

    def beat(self) -> None:
        """Set the heartbeat tag of every evaluation this process holds; a failure is logged, never raised."""
        now = f"{time.time():.0f}"
        for run_id in list(self._queued):
            try:
                self.tracker.set_tags(run_id, {HEARTBEAT: now})
            except Exception as e:  # noqa: BLE001 - MLflow unreachable for a moment: the next beat retries
                logger.warning("evaluation %s: heartbeat not recorded: %s", run_id, str(e).splitlines()[0][:200])

    @property
    def tracker(self):
        """The MLflow tracker, created on first use so the feedback API never imports MLflow."""
        with self._lock:
            if self._tracker is None:
                from driftloop.tracking import Tracker

                self._tracker = Tracker.from_config(self.cfg)
            return self._tracker

    def validate(self, req: EvaluationRequest) -> EvaluationRequest:
        """The request with its model reference checked against the registry; InputError otherwise."""
        ref = api_model_ref(req.model, [self.cfg.path(r) for r in self.cfg.api.model_roots])
        check_window(req.window, self.cfg.api.max_evaluation_window_days)
        configured = list(self.cfg.benchmark.suites)
        for s in req.suites or []:
            if s not in configured:
                near = difflib.get_close_matches(s, configured, n=3)
                raise InputError(
                    f"suite {s!r} is not configured" + (f"; did you mean {', '.join(near)}?" if near else "")
                )
        check_registered(self.tracker, ref)
        return req.model_copy(update={"model": ref})

    def submit(self, req: EvaluationRequest, requested_by: str, tags: dict[str, str] | None = None) -> str:
        """Validate, create the SCHEDULED run and queue the evaluation; returns the run id.

        Raises InputError for a bad request and QueueFull when no slot is free; with
        `via_prefect`, SubmitFailed when Prefect does not take the deployment run.
        """
        req = self.validate(req)
        if self.via_prefect:
            return self._submit_to_prefect(req, requested_by, tags)
        if not self.slots.acquire(blocking=False):
            raise QueueFull()
        try:
            run_id = self._scheduled_run(req, requested_by, {HEARTBEAT: f"{time.time():.0f}", **(tags or {})})
            self._queued[run_id] = self.pool.submit(self._context.copy().run, self._run, run_id, req)
        except BaseException:
            self.slots.release()
            raise
        logger.info("evaluation %s of model %s queued (by %s)", run_id, req.model, requested_by)
        return run_id

    def _scheduled_run(self, req: EvaluationRequest, requested_by: str, tags: dict[str, str]) -> str:
        """The evaluation's MLflow run, created SCHEDULED with what was asked and by whom."""
        run_id = self.tracker.start_run(
            "evaluate-path" if is_model_folder(req.model) else f"evaluate-{req.model}",
            tags={
                T.KIND: KIND,
                T.MODEL: req.model,
                T.REQUESTED_BY: requested_by,
                T.WINDOW: req.window or "",
                T.SUITES: ",".join(req.suites or []),
                **tags,
            },
        )
        self.tracker.set_run_status(run_id, "SCHEDULED")
        return run_id

    def _submit_to_prefect(self, req: EvaluationRequest, requested_by: str, tags: dict[str, str] | None) -> str:
        """Create the SCHEDULED run and a run of `evaluate/on-demand` that fills it (no heartbeat:
        Prefect, not this process, holds the evaluation); returns the MLflow run id."""
        from flows.submit import DEPLOYMENT, submit_evaluation

        tr = self.tracker
        run_id = self._scheduled_run(req, requested_by, tags or {})
        try:
            flow_run = submit_evaluation(run_id=run_id, model=req.model, suites=req.suites, window=req.window)
        except Exception as e:  # noqa: BLE001 - the Prefect API refused or is unreachable: say so, mark the run
            line = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            reason = f"Prefect did not take the run of deployment {DEPLOYMENT}: {line}"
            try:
                tr.set_tags(run_id, {T.ERROR: reason})
                tr.set_run_status(run_id, "KILLED")
            except Exception:  # noqa: BLE001 - the refusal matters more than this one
                logger.warning("could not mark evaluation %s killed", run_id)
            raise SubmitFailed(reason) from e
        tr.set_tags(run_id, {PREFECT_FLOW_RUN: flow_run})
        logger.info(
            "evaluation %s of model %s submitted to Prefect as flow run %s (by %s)",
            run_id,
            req.model,
            flow_run,
            requested_by,
        )
        return run_id

    def _run(self, run_id: str, req: EvaluationRequest) -> None:
        try:
            from flows.common import run_flow
            from flows.evaluate import evaluate

            # Plain Python without a Prefect API: the engine would start Prefect's temporary server
            # (about 300 MB), which outlives this process when it is killed.
            run_flow(
                evaluate, model=req.model, suites=req.suites, window=req.window, config=self.config_path, run_id=run_id
            )
        except Exception as e:  # noqa: BLE001 - the flow marked the run FAILED with its reason
            logger.warning("evaluation %s failed: %s", run_id, str(e).splitlines()[0] if str(e) else type(e).__name__)
        finally:
            self._queued.pop(run_id, None)
            self.slots.release()

    def shutdown(self) -> None:
        """Stop taking work; evaluations still waiting are marked failed (KILLED) with the reason."""
        self._beats.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)
        for run_id, fut in list(self._queued.items()):
            if fut.cancelled():
                try:
                    self.tracker.set_tags(run_id, {T.ERROR: "the API shut down before the evaluation started"})
                    self.tracker.set_run_status(run_id, "KILLED")
                except Exception:  # noqa: BLE001 - best effort on the way down
                    logger.warning("could not mark evaluation %s killed", run_id)

    def status(self, run_id: str) -> dict[str, Any] | None:
        """What GET answers for `run_id`: None where it is no evaluation run."""
        tr = self.tracker
        rec = tr.run_record(run_id)
        if rec is None or rec["tags"].get(T.KIND) != KIND:
            return None
        tags = rec["tags"]
        out: dict[str, Any] = {
            "id": run_id,
            "status": STATUS.get(rec["status"], rec["status"].lower()),
            "model": tags.get(T.MODEL, ""),
            "version": tags.get(T.MODEL_VERSION, ""),
            "window": tags.get(T.WINDOW, ""),
            "suites": [s for s in tags.get(T.SUITES, "").split(",") if s],
            "requested_by": tags.get(T.REQUESTED_BY, ""),
            "link": tr.run_link(run_id),
        }
        if out["status"] in ("queued", "running"):
            lost = self._lost(run_id, tags)
            if lost:
                out["status"], tags = "failed", {**tags, T.ERROR: lost}
        if out["status"] == "finished":
            out["results"] = tr.read_json(run_id, RESULT_ARTIFACT)
        if out["status"] == "failed":
            out["error"] = tags.get(T.ERROR, "failed without a recorded reason")
        return out

    def _lost(self, run_id: str, tags: dict[str, str]) -> str | None:
        """The reason, once the run is marked KILLED with it, when the evaluation's heartbeat is too
        old or its Prefect flow run ended without completing; else None."""
        if tags.get(PREFECT_FLOW_RUN):
            return self._ended_in_prefect(run_id, tags[PREFECT_FLOW_RUN])
        try:
            last = float(tags[HEARTBEAT])
        except (KeyError, ValueError):
            return None  # a run from before heartbeats: nothing to judge by
        if run_id in self._queued or time.time() - last <= self.cfg.api.evaluation_lost_after_seconds:
            return None
        since = datetime.fromtimestamp(last, tz=UTC).isoformat(timespec="seconds")
        reason = f"lost: no heartbeat since {since} (the API process that held it stopped before it finished)"
        self.tracker.set_tags(run_id, {T.ERROR: reason})
        self.tracker.set_run_status(run_id, "KILLED")
        logger.warning("evaluation %s lost: no heartbeat since %s; marked KILLED", run_id, since)
        return reason

    def _ended_in_prefect(self, run_id: str, flow_run_id: str) -> str | None:
        """The reason, once the run is marked KILLED with it, when the Prefect flow run that was to
        fill this evaluation ended without completing (its worker crashed or it was cancelled
        before the flow could record a failure); None while Prefect holds it, or when Prefect
        cannot be asked (logged: the next GET asks again)."""
        from flows.submit import flow_run_ended

        try:
            ended = flow_run_ended(flow_run_id)
        except Exception as e:  # noqa: BLE001 - Prefect unreachable: the evaluation is still Prefect's
            logger.warning("evaluation %s: Prefect flow run %s not read: %s", run_id, flow_run_id, str(e)[:200])
            return None
        if ended is None:
            return None
        rec = self.tracker.run_record(run_id)
        if rec is not None and rec["status"] not in ("SCHEDULED", "RUNNING"):
            return None  # the flow recorded its own outcome between the two reads
        reason = f"lost: Prefect flow run {flow_run_id} ended {ended}"
        self.tracker.set_tags(run_id, {T.ERROR: reason})
        self.tracker.set_run_status(run_id, "KILLED")
        logger.warning("evaluation %s %s; marked KILLED", run_id, reason)
        return reason


MAX_REF_CHARS = 255  # a registry alias or version; a model folder's path


def api_model_ref(model: str, roots: list[Path]) -> str:
    """The model reference of an HTTP request: a registry alias or version, or a folder under `roots`.

    A folder is accepted only inside one of `roots` (`api.model_roots`, none
    by default) and only when it holds a config.json; it is returned as its
    resolved path. Every refusal reads the same whether or not the path
    exists, so a client cannot probe the server's file system. Raises
    InputError.
    """
    ref = (model or "").strip()
    if not ref:
        raise InputError("model: empty; give champion, challenger, another alias or a version number")
    if len(ref) > MAX_REF_CHARS:
        raise InputError(f"model: longer than {MAX_REF_CHARS} characters")
    if (ref.isascii() and ref.isdigit()) or _REGISTRY_REF.fullmatch(ref):
        return ref
    refused = InputError("model: not an alias, a version number or a model folder under api.model_roots")
    if not roots or "\x00" in ref:
        raise refused
    try:
        for root in roots:
            base = root.resolve()
            p = (base / ref).resolve() if not Path(ref).is_absolute() else Path(ref).resolve()
            if p.is_relative_to(base) and (p / "config.json").is_file():
                return str(p)
    except (OSError, ValueError, RuntimeError):
        raise refused from None
    raise refused


_REGISTRY_REF = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")  # an alias: no dot, no slash, so never a path


def check_window(window: str | None, max_days: float) -> None:
    """`window` parsed (InputError naming it when malformed) and at most `max_days` long."""
    if window is not None and len(window) > 64:
        raise InputError("window: longer than 64 characters; expected Nd, Nh or START..END")
    spec = parse_window(window)
    if spec is None:
        return
    days = spec.days if spec.days is not None else (spec.end - spec.start).total_seconds() / 86400
    if days > max_days:
        raise InputError(f"window {window!r}: {days:g} days is over api.max_evaluation_window_days ({max_days:g})")


def start_evaluation(
    runner: EvaluationRunner, req: EvaluationRequest, requested_by: str, tags: dict[str, str] | None = None
) -> EvaluationAccepted:
    """Validate and queue an evaluation exactly as POST /v1/evaluations does (also used by the
    MLflow webhook receiver): its id (answered with 202); HTTPException 422 for bad input, 429
    when the queue is full, 503 when Prefect does not take it."""
    try:
        run_id = runner.submit(req, requested_by, tags)
    except QueueFull:
        api = runner.cfg.api
        raise HTTPException(
            429,
            f"evaluation queue full ({api.max_concurrent_evaluations} running, "
            f"{api.max_queued_evaluations} waiting); retry later",
            headers={"Retry-After": "60"},
        ) from None
    except SubmitFailed as e:
        raise HTTPException(503, str(e), headers={"Retry-After": "60"}) from None
    except DriftloopError as e:
        raise HTTPException(422, str(e)) from None
    return EvaluationAccepted(id=run_id, link=runner.tracker.run_link(run_id))


@router.post(
    "/v1/evaluations",
    status_code=202,
    response_model=EvaluationAccepted,
    dependencies=[Depends(require_scope("evaluate"))],
    openapi_extra=documented_body(EvaluationRequest, "An empty body evaluates the champion."),
)
async def post_evaluation(request: Request, cfg: ConfigDep, runner: RunnerDep) -> EvaluationAccepted:
    """Queue an evaluation of `model` (body: {model, suites?, window?}); answer its id at once."""
    body = await read_body(request, cfg.api.max_evaluation_body_bytes)
    doc = load_json(body, empty={})
    try:
        req = EvaluationRequest.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])[:64] or "body"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise HTTPException(422, f"{where}: {msg}") from None
    # MLflow and the registry are synchronous; keep them off the event loop.
    return await run_in_threadpool(start_evaluation, runner, req, "api")


@router.get(
    "/v1/evaluations/{run_id}",
    response_model=EvaluationStatus,
    response_model_exclude_unset=True,
    dependencies=[Depends(require_scope("evaluate"))],
)
def get_evaluation(run_id: str, runner: RunnerDep) -> EvaluationStatus:
    """Status (queued, running, finished, failed) of an evaluation; its results once finished."""
    if not run_id.isalnum() or len(run_id) > 64:
        raise HTTPException(404, f"evaluation {run_id!r}: not found")
    out = runner.status(run_id)
    if out is None:
        raise HTTPException(404, f"evaluation {run_id!r}: not found")
    return EvaluationStatus(**out)
