"""One cycle's bookkeeping, apart from its orchestration: the summary a cycle returns, the
champion's baseline, the gate's table, and the loop-state steps a lease holder takes.

The `loop` flow (flows/loop.py) reads like a table of contents over these; they need a store
and plain results, never Prefect.

    >>> summary = CycleSummary(cycle="20261207-101500-ab12")
    >>> step(store, "demo", "cycle-ab12", State.RETRAINING, Event.CANDIDATE, "challenger version 2",
    ...      memory, lease_seconds=3600)
    <State.EVALUATING: 'evaluating'>
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from driftloop.core.errors import StageError
from driftloop.core.loopstate import Baseline, Event, LoopMemory, State, advance
from driftloop.core.types import Decision, Finding, MetricResult
from driftloop.store import Store


class CycleSummary(BaseModel):
    """What one cycle did: stage times and notes, the decision and the gate (findings and the reasons
    rendered from them), and the versions involved. Logged as `cycle_summary.json` on the cycle run."""

    cycle: str
    outcome: str = "no action"
    run_id: str = ""
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    stage_notes: dict[str, str] = Field(default_factory=dict)
    decision_action: str = "none"
    decision_reasons: list[str] = Field(default_factory=list)
    decision_findings: list[Finding] = Field(default_factory=list)
    regression: list[str] = Field(default_factory=list)
    retrain_note: str = ""
    retrain_objective: str = Field(default="", description="What the retrain trained: sft, dpo, kto or mixed.")
    retrain_counts: dict[str, int] = Field(
        default_factory=dict, description="Training rows the feedback gave per objective (sft, dpo, kto)."
    )
    gate_reasons: list[str] = Field(default_factory=list)
    gate_findings: list[Finding] = Field(default_factory=list)
    gate_table: list[dict] = Field(default_factory=list)
    champion_version: str | None = None
    challenger_version: str | None = None


def baseline(
    memory: LoopMemory, champion: str | None, reference_quality: list[MetricResult], benchmark: list[MetricResult]
) -> list[MetricResult]:
    """The champion's baseline: its benchmark scores and the reference window when it was first seen.

    Recorded in the loop's memory once per champion version, so `policy.relative_drop` compares
    against the champion's own starting point, not against a window that drifts with it.
    """
    if memory.baseline is None or memory.baseline.champion != champion:
        metrics = [m for m in reference_quality if m.source == "quality"] + list(benchmark)
        memory.baseline = Baseline(champion=champion, metrics=metrics)
    return list(memory.baseline.metrics)


def gate_table(decision: Decision) -> list[dict[str, Any]]:
    """One row per gated task, from the gate's findings (the demo's and the CLI's table)."""
    nan = float("nan")

    def num(v: float | None) -> float:
        return nan if v is None else v

    rows = []
    for f in decision.findings:
        if "suite" not in f.segment:
            continue
        task_name = f.metric.split("/")[1] if f.metric.count("/") >= 2 else f.metric
        rows.append(
            {
                "suite": f.segment["suite"],
                "task": task_name,
                "role": f.role,
                "kind": f.kind,
                "n": f.n,
                "direction": f.direction,
                "target": f.target,
                "champion": num(f.reference),
                "challenger": num(f.challenger),
                "diff": num(f.estimate),
                "ci_low": num(f.ci_low),
                "ci_high": num(f.ci_high),
                "passed": bool(f.passed),
            }
        )
    return rows


def step(
    store: Store,
    project: str,
    owner: str,
    current: State,
    event: Event,
    reason: str,
    memory: LoopMemory,
    lease_seconds: float,
) -> State:
    """One transition of a cycle that holds the lease; losing it (it expired and another cycle
    took over) stops the cycle with a StageError before it acts on a state it no longer owns."""
    to = advance(current, event)
    if not store.transition(
        project, to, reason[:500], owner, lease_seconds, expected={current.value}, data=memory.dump(), holder=True
    ):
        raise StageError(lost_lease(store, project, to, lease_seconds))
    return to


def promote(
    store: Store,
    project: str,
    owner: str,
    summary: CycleSummary,
    memory: LoopMemory,
    lease_seconds: float,
    move: Callable[[], object],
) -> State:
    """evaluating -> promoted and the alias move (`move`) in one fenced store transaction.

    A cycle that no longer holds the lease (it lapsed and another cycle recovered or took the
    loop) moves nothing: `summary.outcome` says so and a StageError stops the cycle.
    """
    if not store.promote(project, owner, summary.outcome[:500], memory.dump(), lease_seconds, move):
        version = summary.challenger_version
        summary.outcome = f"not promoted: version {version} passed the gate, but this cycle lost the loop's lease"
        raise StageError(f"{lost_lease(store, project, State.PROMOTED, lease_seconds)}; version {version} not promoted")
    return State.PROMOTED


def lost_lease(store: Store, project: str, to: State, lease_seconds: float) -> str:
    st = store.get_state(project)
    return (
        f"loop state: cannot move to {to.value}: the state is {st['state']} held by "
        f"{st['lease_owner'] or 'nobody'}; this cycle's lease (policy.lease_seconds="
        f"{lease_seconds:g}) expired and another cycle took over"
    )


def not_started(store: Store, project: str) -> str:
    """Why a retrain this cycle decided on did not start: the loop is elsewhere or held by another."""
    st = store.get_state(project)
    return f"retrain not started: the loop is {st['state']} since {st['since']:%Y-%m-%d %H:%M} UTC" + (
        f", held by {st['lease_owner']}" if st["lease_owner"] else ""
    )


def bench_note(metrics: dict[str, list[MetricResult]]) -> str:
    """`suite:task/metric=0.812 (n=90) cached, ...`: one stage note for a benchmark's figures."""
    parts = []
    for suite, ms in metrics.items():
        for m in ms:
            cached = " cached" if m.note == "cached" else ""
            parts.append(
                f"{suite}:{m.name}={m.value:.3f} (n={m.n}){cached}" if m.value is not None else f"{suite}:{m.name}=-"
            )
    return ", ".join(parts)
