"""Lease fencing: a cycle whose lease lapsed and was taken over can no longer write the loop's
state or promote; the alias moves only inside the promotion's fenced transaction.

The "alias" here is a dict that the promotion's move callable changes, standing in for MLflow's
`champion` alias (the real one is moved by the same callable in flows/loop.py).
"""

from __future__ import annotations

import time

import pytest

from driftloop.core.errors import StageError
from driftloop.core.loopstate import Event, LoopMemory, State
from driftloop.services import cycle

P = "fence"
LEASE = 0.3  # seconds: long enough for the steps below, short enough to lapse in a test


def to_evaluating(store, owner: str) -> None:
    """`owner` acquires the loop and walks it to `evaluating`, as a cycle does."""
    assert store.begin_retrain(P, owner, "breach", {}, LEASE)
    cycle.step(store, P, owner, State.RETRAINING, Event.CANDIDATE, "challenger version 2", LoopMemory(), LEASE)


def summary_for(version: str) -> cycle.CycleSummary:
    return cycle.CycleSummary(cycle="c", outcome=f"promoted version {version}", challenger_version=version)


def test_a_lapsed_holder_cannot_promote_after_another_cycle_took_over(store):
    alias = {"champion": "1"}
    to_evaluating(store, "cycle-A")
    time.sleep(LEASE + 0.1)  # A stalls (GC pause, slow benchmark): its lease lapses
    # B declares A crashed, retrains and reaches evaluating itself; B is slow too, its lease lapses.
    store.rearm(P, "cycle-B", cooldown_seconds=3600)
    assert store.get_state(P)["state"] == "armed"
    to_evaluating(store, "cycle-B")
    time.sleep(LEASE + 0.1)
    before = store.get_state(P)
    summary = summary_for("7")
    with pytest.raises(StageError, match="not promoted"):
        cycle.promote(store, P, "cycle-A", summary, LoopMemory(), LEASE, lambda: alias.update(champion="7"))
    assert alias == {"champion": "1"}  # the alias never moved
    after = store.get_state(P)
    assert (after["state"], after["version"], after["lease_owner"]) == ("evaluating", before["version"], "cycle-B")
    assert summary.outcome.startswith("not promoted: version 7 passed the gate")
    # Nor can A write any other state: its step is fenced off too.
    with pytest.raises(StageError):
        cycle.step(store, P, "cycle-A", State.EVALUATING, Event.REJECT, "rejected", LoopMemory(), LEASE)
    # B, the holder, still promotes.
    cycle.promote(store, P, "cycle-B", summary_for("8"), LoopMemory(), LEASE, lambda: alias.update(champion="8"))
    assert alias == {"champion": "8"}
    assert store.get_state(P)["state"] == "promoted"


def test_a_holder_whose_lease_lapsed_unclaimed_still_promotes(store):
    """Fencing is by takeover, not by the clock: nobody else acted, so the verdict goes through."""
    alias = {"champion": "1"}
    to_evaluating(store, "cycle-A")
    time.sleep(LEASE + 0.1)
    cycle.promote(store, P, "cycle-A", summary_for("2"), LoopMemory(), LEASE, lambda: alias.update(champion="2"))
    assert alias == {"champion": "2"}
    assert store.history(P, limit=1)[0]["to_state"] == "promoted"


def test_a_failed_alias_move_leaves_the_state_unpromoted(store):
    to_evaluating(store, "cycle-A")

    def move() -> None:
        raise RuntimeError("registry unreachable")

    with pytest.raises(RuntimeError, match="registry unreachable"):
        cycle.promote(store, P, "cycle-A", summary_for("2"), LoopMemory(), LEASE, move)
    st = store.get_state(P)
    assert st["state"] == "evaluating"
    assert store.history(P, limit=1)[0]["to_state"] == "evaluating"
