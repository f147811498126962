"""`loop` flow: one cycle of the closed loop, as a table of contents.

ingest -> monitor -> benchmark(champion) -> decide -> [retrain -> benchmark(challenger) -> gate -> promote|reject]

The trigger state machine (armed -> triggered -> retraining -> evaluating ->
promoted|rejected -> cooldown -> armed) lives in the store; every transition
takes a lease there, so two concurrent cycles never start two retrains.

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
from datetime import datetime, timezone

from prefect import flow, task
from pydantic import BaseModel, Field

from driftloop.policy import decide, gate
from driftloop.errors import StageError
from driftloop.types import Action, Decision, MetricResult
from dashboards.timeline import log_timeline
from flows.benchmark import BenchmarkParams, benchmark
from flows.common import Context, StageParams, alert, context, log
from flows.ingest import ingest
from flows.monitor import monitor
from flows.registry import ensure_champion
from flows.retrain import retrain

class CycleSummary(BaseModel):
    cycle: str
    outcome: str = "no action"
    run_id: str = ""
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    stage_notes: dict[str, str] = Field(default_factory=dict)
    decision_action: str = "none"
    decision_reasons: list[str] = Field(default_factory=list)
    regression: list[str] = Field(default_factory=list)
    retrain_note: str = ""
    gate_reasons: list[str] = Field(default_factory=list)
    gate_table: list[dict] = Field(default_factory=list)
    champion_version: str | None = None
    challenger_version: str | None = None


class _Clock:
    def __init__(self, summary: CycleSummary):
        self.s = summary

    def __call__(self, stage: str, fn, *a, **kw):
        t0 = time.monotonic()
        try:
            return fn(*a, **kw)
        finally:
            self.s.stage_seconds[stage] = round(time.monotonic() - t0, 2)
            log().info("stage %s took %.1f s", stage, self.s.stage_seconds[stage])


@task(name="decide")
def decide_task(ctx_params: StageParams, mon, state: dict, bench: list[MetricResult],
                baseline: list[MetricResult]) -> Decision:
    ctx = context(ctx_params)
    return decide(mon.current, mon.reference, mon.drift, ctx.cfg.policy, state,
                  benchmark=bench, baseline=baseline)


def _rearm(ctx: Context, owner: str) -> dict:
    """Leave cooldown when it has elapsed; recover from a crashed holder whose lease expired."""
    policy = ctx.cfg.policy
    before = ctx.store.get_state(ctx.cfg.project)["state"]
    st = ctx.store.rearm(ctx.cfg.project, owner, policy.cooldown_hours * 3600)
    if before != st["state"]:
        log().warning("loop state %s -> %s: %s", before, st["state"], st["reason"])
    return st


def _baseline(data: dict, champion: str | None, mon, champ) -> list[MetricResult]:
    """The champion's baseline: its benchmark scores and the reference window when it was first seen.

    Recorded in the loop state once per champion version, so `policy.relative_drop` compares against
    the champion's own starting point, not against a window that drifts with it.
    """
    rec = data.get("baseline") or {}
    if rec.get("champion") != champion:
        metrics = [m for m in mon.reference if m.source == "quality"] + _flat(champ)
        rec = {"champion": champion, "metrics": [m.model_dump(mode="json") for m in metrics]}
        data["baseline"] = rec
    return [MetricResult(**m) for m in rec["metrics"]]


def _flat(bench) -> list[MetricResult]:
    return [m for metrics in bench.metrics.values() for m in metrics]


def _step(ctx: Context, owner: str, to_state: str, reason: str, expected: set[str], data: dict) -> None:
    """One transition of a cycle that holds the lease; losing it (it expired and another cycle
    took over) stops this cycle before it acts on a state it no longer owns."""
    if not ctx.store.transition(ctx.cfg.project, to_state, reason[:500], owner, ctx.cfg.policy.lease_seconds,
                                expected=expected, data=data):
        st = ctx.store.get_state(ctx.cfg.project)
        raise StageError(f"loop state: cannot move to {to_state}: the state is {st['state']} held by "
                         f"{st['lease_owner'] or 'nobody'}; this cycle's lease (policy.lease_seconds="
                         f"{ctx.cfg.policy.lease_seconds:g}) expired and another cycle took over")


def _gate_table(decision: Decision, champ, chall) -> list[dict]:
    rows = []
    for m in decision.evidence:
        if m.source != "benchmark":
            continue
        suite = m.segment.get("suite", "")
        task_name = m.name.rsplit("/", 1)[0]
        c0 = next((s for s in champ.samples.get(suite, []) if s.task == task_name), None)
        c1 = next((s for s in chall.samples.get(suite, []) if s.task == task_name), None)
        shared = sorted(set(c0.items) & set(c1.items)) if c0 and c1 else []
        mean = (lambda s: sum(s.items[i] for i in shared) / len(shared)) if shared else (lambda s: float("nan"))
        rows.append({"suite": suite, "task": task_name, "role": m.segment.get("role", ""), "n": m.n,
                     "champion": mean(c0) if c0 else float("nan"), "challenger": mean(c1) if c1 else float("nan"),
                     "diff": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "passed": bool(m.passed)})
    return rows


def _not_started(ctx: Context) -> str:
    st = ctx.store.get_state(ctx.cfg.project)
    return (f"retrain not started: the loop is {st['state']} since {st['since']:%Y-%m-%d %H:%M} UTC"
            + (f", held by {st['lease_owner']}" if st["lease_owner"] else ""))


def _regression_alert(ctx: Context, summary: CycleSummary, decision: Decision) -> None:
    """`regression.detected`, sent only by the cycle that took the loop to retrain (one per trigger)."""
    alert(ctx, "regression.detected", model_version=summary.champion_version, reasons=decision.reasons,
          run_id=summary.run_id, cycle=summary.cycle)


def _hand_off(ctx: Context, owner: str, params: StageParams, summary: CycleSummary, state: dict, data: dict,
              decision: Decision) -> None:
    """Event mode: armed -> triggered, then emit `driftloop.regression.detected` for the automation.

    Only the cycle whose compare-and-set succeeds emits, so at most one event per trigger (and so
    per cooldown). The lease is kept, not released: it passes to the `retrain` run (its owner is
    recorded in `data["pending"]`), so the next cycle's `rearm` leaves `triggered` alone until the
    lease (policy.lease_seconds) expires, and an event nobody acted on is then re-armed.
    """
    from flows.events import emit_regression  # flows.events imports this module for the shared tail

    cfg = ctx.cfg
    summary.outcome = "retrain requested (event driftloop.regression.detected)"
    data["pending"] = {"run_id": summary.run_id, "owner": owner, "config": params.config,
                       "summary": summary.model_dump(mode="json")}
    if not ctx.store.transition(cfg.project, "triggered", decision.summary()[:500], owner, cfg.policy.lease_seconds,
                                expected={"armed"}, data=data, expected_version=state["version"]):
        summary.outcome = _not_started(ctx)  # no alert: the cycle that holds the loop sent it
        return
    _regression_alert(ctx, summary, decision)
    event_id = emit_regression(cfg.project, decision.reasons, summary.run_id, summary.champion_version,
                               params.config)
    summary.stage_notes["retrain"] = f"requested by event {event_id}"


def finish_retrain(ctx: Context, owner: str, sp: StageParams, summary: CycleSummary, clock: _Clock, champ,
                   data: dict, feedback: list[MetricResult] | None) -> CycleSummary:
    """The second half of a cycle, shared by the inline loop and the event-driven `retrain` deployment.

    Starts in state `retraining` under `owner`'s lease and walks fine-tune -> evaluating ->
    benchmark(challenger) -> gate -> promoted|rejected -> cooldown, then releases the lease.
    `champ` is the champion's benchmark result, `feedback` the decision's evidence (quoted by the
    gate). Stage runs nest under `summary.run_id`; fills `summary` in place and returns it.
    """
    cfg, tr, store = ctx.cfg, ctx.tracker, ctx.store
    parent = summary.run_id
    alert(ctx, "retrain.started", model_version=summary.champion_version,
          reasons=summary.regression or summary.decision_reasons, run_id=parent, cycle=summary.cycle)
    try:
        rt = clock("retrain", retrain, sp)
    except Exception as e:
        store.transition(cfg.project, "cooldown", f"retrain failed: {e}"[:500], owner, 0, {"retraining"}, data)
        store.release(cfg.project, owner)
        # The finally block tags the cycle run with this outcome; the champion is untouched.
        summary.outcome = "retrain failed"
        summary.retrain_note = f"failed: {e}"[:300]
        alert(ctx, "retrain.failed", model_version=summary.champion_version, reasons=[str(e)[:1000]],
              run_id=parent, cycle=summary.cycle)
        raise
    summary.challenger_version = rt.version
    summary.retrain_note = (f"{rt.method} on {rt.n_train} training-pool items + {rt.n_replay} replay, "
                            f"{rt.train_seconds:.0f} s, final loss {rt.final_loss:.3f} -> version {rt.version}")
    alert(ctx, "retrain.finished", model_version=rt.version, previous_version=rt.base_version,
          reasons=[summary.retrain_note], run_id=parent, cycle=summary.cycle)
    _step(ctx, owner, "evaluating", f"challenger version {rt.version}", {"retraining"}, data)
    chall = clock("benchmark challenger", benchmark,
                  BenchmarkParams(**sp.model_dump(), model=rt.version, suites=list(champ.samples)))
    summary.stage_notes["benchmark challenger"] = _bench_note(chall)
    roles = {name: s.role for name, s in cfg.benchmark.suites.items()}
    verdict = clock("gate", gate, chall.samples, champ.samples, roles, cfg.policy, feedback)
    tr.log_decision(parent, verdict, "gate")
    tr.log_decision(chall.run_id, verdict, "gate")
    # Gate figures on the cycle run (metrics) and on the version (tags, description): the MLflow UI's
    # comparison view then answers "why is version N the champion?".
    tr.record_gate(parent, rt.version, verdict)
    summary.gate_reasons = verdict.reasons
    summary.gate_table = _gate_table(verdict, champ, chall)
    if verdict.action == Action.PROMOTE:
        summary.outcome = f"promoted version {rt.version}"
        # The state first: a cycle that lost its lease must not move the alias.
        _step(ctx, owner, "promoted", summary.outcome, {"evaluating"}, data)
        tr.move_champion(rt.version, by="gate", reason="; ".join(verdict.reasons)[:4000], how="gate")
        tr.set_version_tags(rt.version, {"driftloop.cycle_run": parent})
        summary.champion_version = rt.version
    else:
        summary.outcome = f"rejected version {rt.version}"
        _step(ctx, owner, "rejected", summary.outcome, {"evaluating"}, data)
        tr.set_version_tags(rt.version, {"driftloop.rejected_by": "gate", "driftloop.cycle_run": parent})
    summary.stage_notes["gate"] = summary.outcome
    alert(ctx, "candidate.promoted" if verdict.action == Action.PROMOTE else "candidate.rejected",
          model_version=rt.version, previous_version=rt.base_version, reasons=verdict.reasons, run_id=parent,
          cycle=summary.cycle)
    _step(ctx, owner, "cooldown", f"after {summary.outcome}", {"promoted", "rejected"}, data)
    store.release(cfg.project, owner)
    return summary


@flow(name="loop")
def loop(params: StageParams = StageParams()) -> CycleSummary:
    """Run one cycle and return its summary; every stage is a nested MLflow run of the cycle's run."""
    ctx = context(params, check_files=True)
    cfg, tr, store = ctx.cfg, ctx.tracker, ctx.store
    owner = f"cycle-{uuid.uuid4().hex[:8]}"
    summary = CycleSummary(cycle=datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + owner[-4:])
    clock = _Clock(summary)
    champion = clock("register champion", ensure_champion, params)
    parent = tr.start_run(f"cycle-{summary.cycle}", tags={"driftloop.kind": "cycle", "driftloop.owner": owner})
    summary.run_id = parent
    sp = StageParams(config=params.config, parent_run_id=parent)
    failed = True
    try:
        state = _rearm(ctx, owner)
        ing = clock("ingest", ingest, sp)
        summary.stage_notes["ingest"] = f"{ing['accepted']} accepted, {ing['duplicates']} duplicates, {ing['quarantined']} quarantined"
        mon = clock("monitor", monitor, sp)
        summary.stage_notes["monitor"] = f"{mon.n_current} current vs {mon.n_reference} reference events"
        champ = clock("benchmark champion", benchmark, BenchmarkParams(**sp.model_dump(), model="champion"))
        summary.stage_notes["benchmark champion"] = _bench_note(champ)
        data = dict(state["data"])
        baseline = _baseline(data, champion, mon, champ)
        decision = clock("decide", decide_task, sp, mon, state["data"], _flat(champ), baseline)
        tr.log_decision(parent, decision, "decide")
        summary.decision_action = decision.action.value
        summary.decision_reasons = decision.reasons
        summary.stage_notes["decide"] = decision.action.value
        breached = any(e.passed is False for e in decision.evidence if e.source in ("quality", "benchmark"))
        data["breaches"] = (list(data.get("breaches", [])) + [breached])[-50:]
        summary.champion_version = champion
        if decision.action != Action.RETRAIN:
            # Only over the state this cycle read: newer data (another cycle's retrain) is never overwritten.
            store.transition(cfg.project, state["state"], decision.summary()[:500], owner, 0,
                             expected={state["state"]}, data=data, expected_version=state["version"])
            store.release(cfg.project, owner)
            summary.outcome = "no retrain needed" if decision.action == Action.NONE else "alert only"
            failed = False
            return summary
        summary.regression = [r for r in decision.reasons if "floor" in r or "fell" in r]
        now = datetime.now(timezone.utc).isoformat()
        data["last_retrain_at"] = now
        data["retrains"] = (list(data.get("retrains", [])) + [now])[-20:]
        if cfg.policy.retrain_via == "event":
            _hand_off(ctx, owner, params, summary, state, data, decision)
            failed = False
            return summary
        if not store.begin_retrain(cfg.project, owner, decision.summary()[:500], data, cfg.policy.lease_seconds,
                                   expected_version=state["version"]):
            summary.outcome = _not_started(ctx)  # no alert: the cycle that holds the loop sent it
            failed = False
            return summary
        _regression_alert(ctx, summary, decision)
        finish_retrain(ctx, owner, sp, summary, clock, champ, data, decision.evidence)
        failed = False
        return summary
    finally:
        tr.set_tags(parent, {"driftloop.outcome": summary.outcome})
        tr.log_dict(parent, summary.model_dump(mode="json"), "cycle_summary.json")
        log_timeline(tr, cfg, parent)  # never raises
        tr.end_run(parent, failed=failed)


def _bench_note(res) -> str:
    parts = []
    for suite, metrics in res.metrics.items():
        for m in metrics:
            cached = " cached" if m.note == "cached" else ""
            parts.append(f"{suite}:{m.name}={m.value:.3f} (n={m.n}){cached}" if m.value is not None
                         else f"{suite}:{m.name}=-")
    return ", ".join(parts)
