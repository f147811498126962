"""Event-driven retrain: the regression event, and the `retrain` deployment's flow that finishes the cycle.

With `policy.retrain_via: event` a `loop` cycle that decides RETRAIN moves the
loop state armed -> triggered (compare-and-set: one cycle wins), records what
the rest of the cycle needs in the loop's memory (`LoopMemory.pending`), and emits
`driftloop.regression.detected` for resource `driftloop.project.<project>`.
The automation declared on the `retrain/gpu` deployment in prefect.yaml runs
`retrain_cycle` on the `gpu` pool, which takes the cycle over
(triggered -> retraining, a second compare-and-set: one run wins), fine-tunes,
benchmarks the challenger against the champion, gates, and promotes or rejects
into cooldown, all nested under the cycle's MLflow run.

    >>> emit_regression("demo", ["thumbs-up rate fell"], cycle_run_id="ab12", champion_version="1",
    ...                 config="/srv/driftloop/driftloop.yaml")
    'f3c1…'
    >>> retrain_cycle(StageParams(config="driftloop.yaml")).outcome
    'promoted version 2'
"""

from __future__ import annotations

from prefect import flow
from prefect.events import emit_event

from dashboards.timeline import log_timeline
from driftloop.core import tags as T
from driftloop.core.loopstate import Event, LoopMemory, State, advance
from driftloop.services.cycle import CycleSummary, not_started
from flows.benchmark import BenchmarkParams, benchmark
from flows.common import StageParams, context, log
from flows.loop import _Clock, finish_retrain, log_cost

REGRESSION_EVENT = "driftloop.regression.detected"


def resource_id(project: str) -> str:
    """The Prefect resource id the regression event is about (one per project; the automation
    buckets on it, so two projects never suppress each other's retrains)."""
    return f"driftloop.project.{project}"


def check_trigger(spec: dict):
    """A prefect.yaml deployment trigger, validated by the model `prefect deploy` uses; raises
    ValueError (pydantic's) naming the field at fault."""
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    return TypeAdapter(DeploymentTriggerTypes).validate_python(dict(spec))


def emit_regression(
    project: str, reasons: list[str], cycle_run_id: str, champion_version: str | None, config: str | None
) -> str | None:
    """Emit `driftloop.regression.detected` and return the event id (None where Prefect has no
    events API to send to: no PREFECT_API_URL and not the ephemeral API).

    The payload carries the decision's reasons, the cycle's MLflow run id, the champion version and
    the config path; the automation passes `config` and `cycle_run_id` on as the `retrain` flow's
    parameters.
    """
    event = emit_event(
        REGRESSION_EVENT,
        resource={"prefect.resource.id": resource_id(project), "prefect.resource.name": project},
        payload={
            "project": project,
            "reasons": list(reasons),
            "cycle_run_id": cycle_run_id,
            "champion_version": champion_version,
            "config": config,
        },
    )
    if event is None:
        log().warning(
            "%s not emitted: no Prefect events API is configured (set PREFECT_API_URL); "
            "the loop stays triggered until policy.lease_seconds pass, then re-arms",
            REGRESSION_EVENT,
        )
        return None
    log().info("emitted %s (event %s) for project %s", REGRESSION_EVENT, event.id, project)
    return str(event.id)


@flow(name="retrain")
def retrain_cycle(params: StageParams = StageParams(), cycle_run_id: str | None = None) -> CycleSummary:
    """Finish the cycle that is waiting in state `triggered`: fine-tune, gate, promote or reject, cooldown.

    The store, not the event, says what to do: with nothing triggered (a duplicate or late run) it
    returns at once with outcome "nothing to retrain"; of two runs racing for one trigger exactly
    one moves it to `retraining`. `cycle_run_id` (from the event) only cross-checks which cycle
    asked; the cycle waiting now is the one finished.
    """
    ctx = context(params)
    cfg, store, tr = ctx.cfg, ctx.store, ctx.tracker
    st = store.get_state(cfg.project)
    memory = LoopMemory.load(st["data"])
    pending = memory.pending
    if st["state"] != State.TRIGGERED or pending is None:
        log().warning("retrain: nothing to do: the loop of project %s is %s, not triggered", cfg.project, st["state"])
        return CycleSummary(cycle="", outcome=f"nothing to retrain: the loop is {st['state']}")
    if cycle_run_id and cycle_run_id != pending.run_id:
        log().warning(
            "retrain: the event came from cycle run %s; finishing the cycle waiting now (run %s)",
            cycle_run_id,
            pending.run_id,
        )
    owner = pending.owner  # the emitting cycle's lease passes to this run
    memory.pending = None
    if not store.transition(
        cfg.project,
        advance(State.TRIGGERED, Event.START),
        "retrain started by event",
        owner,
        cfg.policy.lease_seconds,
        expected={State.TRIGGERED.value},
        data=memory.dump(),
        expected_version=st["version"],
    ):
        return CycleSummary(cycle="", outcome=not_started(store, cfg.project))
    summary = CycleSummary(**pending.summary)
    summary.outcome = "retrain failed"  # until the tail says otherwise
    log().info("retrain: took over cycle %s (MLflow run %s)", summary.cycle, summary.run_id)
    clock = _Clock(summary)
    sp = StageParams(config=params.config, parent_run_id=summary.run_id)
    failed = True
    try:
        # Cached when the emitting cycle benchmarked this champion on the same tasks.
        champ = clock("benchmark champion", benchmark, BenchmarkParams(**sp.model_dump(), model="champion"))
        # The decision's evidence stays on the cycle run (decision_decide.json); the gate gets none to quote.
        finish_retrain(ctx, owner, sp, summary, clock, champ, memory, feedback=None)
        failed = False
        return summary
    finally:
        tr.set_tags(summary.run_id, {T.OUTCOME: summary.outcome, T.RETRAIN_VIA: "event"})
        tr.log_dict(summary.run_id, summary.model_dump(mode="json"), "cycle_summary.json")
        log_timeline(tr, ctx.cfg, summary.run_id)  # never raises
        log_cost(tr, summary.run_id, clock)  # never raises
        tr.end_run(summary.run_id, failed=failed)
