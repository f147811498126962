"""`loop` flow: one cycle of the closed loop, as a table of contents.

ingest -> monitor -> benchmark(champion) -> decide -> [retrain -> benchmark(challenger) -> gate -> promote|reject]

The state machine (armed -> triggered -> retraining -> evaluating ->
promoted|rejected -> cooldown -> armed) is `driftloop.core.loopstate`: a cycle says what
happened (an `Event`), `advance` says where it leads, and the store persists it with a
compare-and-set under a lease, so two concurrent cycles never start two retrains. The
loop's memory (`LoopMemory`) travels with the state: after a promotion the current
window counts only the new champion's traffic, and breaches a retrain already answered
wait for new feedback before they may trigger again.

The bracketed tail is `finish_retrain`. With `policy.retrain_via: inline` (the
default) the cycle runs it itself; with `event` the cycle stops at `triggered`
and emits `driftloop.regression.detected`, and the `retrain/gpu` deployment runs
the tail (flows/events.py).

    >>> summary = loop(StageParams(config="driftloop.yaml"))
    >>> summary.outcome
    'promoted version 2'
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from prefect import flow, task

from dashboards.timeline import log_timeline
from driftloop.core import tags as T
from driftloop.core.errors import StageError
from driftloop.core.findings import render_all
from driftloop.core.gate import gate
from driftloop.core.loopstate import Event, LoopMemory, Pending, State, advance
from driftloop.core.policy import BREACH_KINDS, breach_key, decide, nothing_to_train
from driftloop.core.types import Action, Decision, MetricResult
from driftloop.services import cycle
from driftloop.services.cost import CostMeter, cost_metrics
from driftloop.services.cycle import CycleSummary
from driftloop.services.reconcile import reconcile
from flows.benchmark import BenchmarkParams, benchmark
from flows.common import Context, StageParams, alert, context, log
from flows.ingest import ingest
from flows.monitor import monitor
from flows.registry import ensure_champion
from flows.retrain import retrain


class _Clock:
    def __init__(self, summary: CycleSummary):
        self.s = summary
        self.meter = CostMeter()  # wall and CPU seconds per stage, for the cycle run's cost/ metrics
        self.retrain_run: str | None = None

    def __call__(self, stage: str, fn, *a, **kw):
        t0 = time.monotonic()
        try:
            with self.meter.stage(stage):
                return fn(*a, **kw)
        finally:
            self.s.stage_seconds[stage] = round(time.monotonic() - t0, 2)
            log().info("stage %s took %.1f s", stage, self.s.stage_seconds[stage])


@task(name="decide")
def decide_task(
    ctx_params: StageParams, mon, memory: LoopMemory, bench: list[MetricResult], baseline: list[MetricResult]
) -> Decision:
    ctx = context(ctx_params)
    return decide(
        mon.current,
        mon.reference,
        mon.drift,
        ctx.cfg.policy,
        memory,
        benchmark=bench,
        baseline=baseline,
        fresh_events=mon.fresh_events,
        judged=mon.judged,  # trusted judges' PPI++ estimates replace human-only figures (docs/concepts/judges.md)
        reference_judged=mon.reference_judged,  # the reference window's too: a drop compares estimate with estimate
    )


def _rearm(ctx: Context, owner: str) -> dict:
    """Leave cooldown when it has elapsed; recover from a crashed holder whose lease expired."""
    policy = ctx.cfg.policy
    done = reconcile(ctx.store, ctx.tracker, ctx.cfg.project, owner)
    if done is not None:
        log().warning("loop state: %s", done.reason)
    before = ctx.store.get_state(ctx.cfg.project)["state"]
    st = ctx.store.rearm(ctx.cfg.project, owner, policy.cooldown_hours * 3600)
    if before != st["state"]:
        log().warning("loop state %s -> %s: %s", before, st["state"], st["reason"])
    return st


def _regression_alert(ctx: Context, summary: CycleSummary, decision: Decision) -> None:
    """`regression.detected`, sent only by the cycle that took the loop to retrain (one per trigger)."""
    alert(
        ctx,
        "regression.detected",
        model_version=summary.champion_version,
        reasons=decision.reasons,
        run_id=summary.run_id,
        cycle=summary.cycle,
    )


def _hand_off(
    ctx: Context,
    owner: str,
    params: StageParams,
    summary: CycleSummary,
    state: dict,
    memory: LoopMemory,
    decision: Decision,
) -> None:
    """Event mode: armed -> triggered, then emit `driftloop.regression.detected` for the automation.

    Only the cycle whose compare-and-set succeeds emits, so at most one event per trigger (and so
    per cooldown). The lease is kept, not released: it passes to the `retrain` run (its owner is
    recorded in `memory.pending`), so the next cycle's `rearm` leaves `triggered` alone until the
    lease (policy.lease_seconds) expires, and an event nobody acted on is then re-armed.
    """
    from flows.events import emit_regression  # flows.events imports this module for the shared tail

    cfg = ctx.cfg
    summary.outcome = "retrain requested (event driftloop.regression.detected)"
    memory.pending = Pending(
        run_id=summary.run_id, owner=owner, config=params.config, summary=summary.model_dump(mode="json")
    )
    if not ctx.store.transition(
        cfg.project,
        advance(State.ARMED, Event.BREACH),
        decision.summary()[:500],
        owner,
        cfg.policy.lease_seconds,
        expected={State.ARMED.value},
        data=memory.dump(),
        expected_version=state["version"],
    ):
        summary.outcome = cycle.not_started(
            ctx.store, ctx.cfg.project
        )  # no alert: the cycle that holds the loop sent it
        return
    _regression_alert(ctx, summary, decision)
    event_id = emit_regression(cfg.project, decision.reasons, summary.run_id, summary.champion_version, params.config)
    summary.stage_notes["retrain"] = f"requested by event {event_id}"


def _nothing_to_train(
    ctx: Context, owner: str, summary: CycleSummary, memory: LoopMemory, corrections: int, needed: int
) -> CycleSummary:
    """A real regression that the training data cannot answer: a recorded decision, an alert and a
    cooldown; the cycle itself succeeds (the champion is untouched)."""
    decision = nothing_to_train(corrections, needed, ctx.cfg.policy)
    ctx.tracker.log_decision(summary.run_id, decision, "retrain")
    memory.answer("nothing to train on")
    _step(ctx, owner, State.RETRAINING, Event.NOTHING_TO_TRAIN, decision.reasons[0], memory)
    ctx.store.release(ctx.cfg.project, owner)
    summary.outcome = summary.retrain_note = decision.reasons[0]
    summary.stage_notes["retrain"] = "skipped: nothing to train on"
    log().warning(
        "%s; the loop cools down (policy.cooldown_hours) and the champion stays version %s",
        decision.reasons[0],
        summary.champion_version,
    )
    alert(
        ctx,
        "retrain.skipped",
        model_version=summary.champion_version,
        reasons=decision.reasons,
        run_id=summary.run_id,
        cycle=summary.cycle,
    )
    return summary


def _step(ctx: Context, owner: str, current: State, event: Event, reason: str, memory: LoopMemory) -> State:
    return cycle.step(ctx.store, ctx.cfg.project, owner, current, event, reason, memory, ctx.cfg.policy.lease_seconds)


def finish_retrain(
    ctx: Context,
    owner: str,
    sp: StageParams,
    summary: CycleSummary,
    clock: _Clock,
    champ,
    memory: LoopMemory,
    feedback: list[MetricResult] | None,
) -> CycleSummary:
    """The second half of a cycle, shared by the inline loop and the event-driven `retrain` deployment.

    Starts in state `retraining` under `owner`'s lease and walks fine-tune -> evaluating ->
    benchmark(challenger) -> gate -> promoted|rejected -> cooldown, then releases the lease.
    `champ` is the champion's benchmark result, `feedback` the decision's evidence (quoted by the
    gate). Stage runs nest under `summary.run_id`; fills `summary` in place and returns it.
    """
    cfg, tr, store = ctx.cfg, ctx.tracker, ctx.store
    parent = summary.run_id
    alert(
        ctx,
        "retrain.started",
        model_version=summary.champion_version,
        reasons=summary.regression or summary.decision_reasons,
        run_id=parent,
        cycle=summary.cycle,
    )
    try:
        rt = clock("retrain", retrain, sp)
    except Exception as e:
        memory.answer(None)  # a crash answers nothing: the breach may trigger again after the cooldown
        moved = store.transition(
            cfg.project,
            advance(State.RETRAINING, Event.FAIL),
            f"retrain failed: {e}"[:500],
            owner,
            0,
            {State.RETRAINING.value},
            memory.dump(),
            holder=True,
        )
        summary.outcome = "retrain failed"
        summary.retrain_note = f"failed: {e}"[:300]
        alert(
            ctx,
            "retrain.failed",
            model_version=summary.champion_version,
            reasons=[str(e)[:1000]],
            run_id=parent,
            cycle=summary.cycle,
        )
        if not moved:
            # Another cycle holds the loop now: its state and its lease are left alone.
            summary.outcome = "retrain failed; the loop was taken over by another cycle"
            lost = cycle.lost_lease(store, cfg.project, State.COOLDOWN, cfg.policy.lease_seconds)
            raise StageError(f"{lost} (the retrain had failed: {e})"[:1000]) from e
        store.release(cfg.project, owner)
        raise
    clock.retrain_run = rt.run_id
    if rt.nothing_to_train:
        return _nothing_to_train(ctx, owner, summary, memory, rt.n_train, rt.needed)
    summary.challenger_version = rt.version
    counts = ", ".join(f"{n} {k}" for k, n in rt.counts.items() if n) if rt.counts else ""
    summary.retrain_objective, summary.retrain_counts = rt.objective, dict(rt.counts)
    summary.retrain_note = (
        f"{rt.method} {rt.objective} on {rt.n_train} training-pool items"
        + (f" ({counts})" if counts else "")
        + f" + {rt.n_replay} replay, "
        f"{rt.train_seconds:.0f} s, final loss {rt.final_loss:.3f} -> version {rt.version}"
    )
    alert(
        ctx,
        "retrain.finished",
        model_version=rt.version,
        previous_version=rt.base_version,
        reasons=[summary.retrain_note],
        run_id=parent,
        cycle=summary.cycle,
    )
    memory.record_training(datetime.now(UTC), rt.train_seconds)  # against policy.max_training_hours_per_day
    _step(ctx, owner, State.RETRAINING, Event.CANDIDATE, f"challenger version {rt.version}", memory)
    chall = clock(
        "benchmark challenger",
        benchmark,
        BenchmarkParams(**sp.model_dump(), model=rt.version, suites=list(champ.samples)),
    )
    summary.stage_notes["benchmark challenger"] = cycle.bench_note(chall.metrics)
    roles = {name: s.role for name, s in cfg.benchmark.suites.items()}
    verdict = clock("gate", gate, chall.samples, champ.samples, roles, cfg.policy, feedback)
    tr.log_decision(parent, verdict, "gate")
    tr.log_decision(chall.run_id, verdict, "gate")
    # Gate figures on the cycle run (metrics) and on the version (tags, description): the MLflow UI's
    # comparison view then answers "why is version N the champion?".
    tr.record_gate(parent, rt.version, verdict)
    summary.gate_reasons = verdict.reasons
    summary.gate_findings = verdict.findings
    summary.gate_table = cycle.gate_table(verdict)
    promoted = verdict.action == Action.PROMOTE
    summary.outcome = f"{'promoted' if promoted else 'rejected'} version {rt.version}"
    if promoted:
        memory.new_champion(rt.version, datetime.now(UTC), "gate")
        # The state and the alias in one fenced transaction: a cycle that lost its lease moves nothing.
        why = "; ".join(verdict.reasons)[:4000]
        at = cycle.promote(
            store,
            cfg.project,
            owner,
            summary,
            memory,
            cfg.policy.lease_seconds,
            lambda: tr.move_champion(rt.version, by="gate", reason=why, how="gate"),
        )
        tr.set_version_tags(rt.version, {T.CYCLE_RUN: parent})
        summary.champion_version = rt.version
    else:
        memory.answer(summary.outcome)
        at = _step(ctx, owner, State.EVALUATING, Event.REJECT, summary.outcome, memory)
        tr.set_version_tags(rt.version, {T.REJECTED_BY: "gate", T.CYCLE_RUN: parent})
    tr.close_candidate(rt.version, promoted)  # `challenger` goes; a rejected version keeps no alias
    summary.stage_notes["gate"] = summary.outcome
    alert(
        ctx,
        "candidate.promoted" if promoted else "candidate.rejected",
        model_version=rt.version,
        previous_version=rt.base_version,
        reasons=verdict.reasons,
        run_id=parent,
        cycle=summary.cycle,
    )
    _step(ctx, owner, at, Event.COOL, f"after {summary.outcome}", memory)
    store.release(cfg.project, owner)
    return summary


@flow(name="loop")
def loop(params: StageParams = StageParams()) -> CycleSummary:
    """Run one cycle and return its summary; every stage is a nested MLflow run of the cycle's run."""
    ctx = context(params, check_files=True)
    cfg, tr, store = ctx.cfg, ctx.tracker, ctx.store
    owner = f"cycle-{uuid.uuid4().hex[:8]}"
    summary = CycleSummary(cycle=datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + owner[-4:])
    clock = _Clock(summary)
    champion = clock("register champion", ensure_champion, params)
    parent = tr.start_run(f"cycle-{summary.cycle}", tags={T.KIND: "cycle", T.OWNER: owner})
    summary.run_id = parent
    sp = StageParams(config=params.config, parent_run_id=parent)
    failed = True
    try:
        state = _rearm(ctx, owner)
        memory = LoopMemory.load(state["data"])
        memory.sync_champion(champion, datetime.now(UTC))
        ing = clock("ingest", ingest, sp)
        summary.stage_notes["ingest"] = (
            f"{ing['accepted']} accepted, {ing['duplicates']} duplicates, {ing['quarantined']} quarantined"
        )
        mon = clock(
            "monitor",
            monitor,
            sp,
            scope=memory.champion,
            fresh_after=memory.answered.newest_event if memory.answered else None,
        )
        scope = f"; current window: {mon.scope}" if mon.scope else ""
        summary.stage_notes["monitor"] = f"{mon.n_current} current vs {mon.n_reference} reference events{scope}"
        champ = clock("benchmark champion", benchmark, BenchmarkParams(**sp.model_dump(), model="champion"))
        summary.stage_notes["benchmark champion"] = cycle.bench_note(champ.metrics)
        baseline = cycle.baseline(memory, champion, mon.reference, _flat(champ))
        decision = clock("decide", decide_task, sp, mon, memory, _flat(champ), baseline)
        tr.log_decision(parent, decision, "decide")
        summary.decision_action = decision.action.value
        summary.decision_reasons = decision.reasons
        summary.decision_findings = decision.findings
        summary.stage_notes["decide"] = decision.action.value
        breaches = [f for f in decision.of_kind(*BREACH_KINDS) if f.breached]
        memory.record_breach(bool(breaches))
        summary.champion_version = champion
        if decision.action != Action.RETRAIN:
            # Only over the state this cycle read: newer data (another cycle's retrain) is never overwritten.
            store.transition(
                cfg.project,
                advance(state["state"], Event.RECORD),
                decision.summary()[:500],
                owner,
                0,
                expected={state["state"]},
                data=memory.dump(),
                expected_version=state["version"],
            )
            store.release(cfg.project, owner)
            summary.outcome = "no retrain needed" if decision.action == Action.NONE else "alert only"
            failed = False
            return summary
        summary.regression = render_all(breaches)
        memory.start_retrain(datetime.now(UTC), [breach_key(f) for f in breaches], mon.current_newest)
        if cfg.policy.retrain_via == "event":
            _hand_off(ctx, owner, params, summary, state, memory, decision)
            failed = False
            return summary
        if not store.begin_retrain(
            cfg.project,
            owner,
            decision.summary()[:500],
            memory.dump(),
            cfg.policy.lease_seconds,
            expected_version=state["version"],
        ):
            summary.outcome = cycle.not_started(
                ctx.store, ctx.cfg.project
            )  # no alert: the cycle that holds the loop sent it
            failed = False
            return summary
        _regression_alert(ctx, summary, decision)
        finish_retrain(ctx, owner, sp, summary, clock, champ, memory, decision.evidence)
        failed = False
        return summary
    finally:
        tr.set_tags(parent, {T.OUTCOME: summary.outcome})
        tr.log_dict(parent, summary.model_dump(mode="json"), "cycle_summary.json")
        if cfg.retention.timeline == "every_cycle":
            log_timeline(tr, cfg, parent)  # never raises
        log_cost(tr, parent, clock)  # never raises
        tr.end_run(parent, failed=failed)


def log_cost(tr, run_id: str, clock: _Clock) -> None:
    """The cycle's cost on its run: `cost/<stage>/wall_s|cpu_s`, and the fine-tune's tokens, GPU
    seconds and peak GPU memory (`driftloop.services.cost`). Never raises: the cycle is done."""
    try:
        trained = (tr.run_record(clock.retrain_run) or {}).get("metrics") if clock.retrain_run else None
        tr.log_metrics(run_id, cost_metrics(clock.meter, trained))
    except Exception as e:  # noqa: BLE001 - a cost figure never fails the cycle it describes
        log().warning("cycle cost not recorded: %s", e)


def _flat(bench) -> list[MetricResult]:
    return [m for metrics in bench.metrics.values() for m in metrics]
