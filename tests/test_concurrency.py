"""Concurrent cycles against one store: exactly one retrain starts, and a killed
lease holder is recovered from once its lease expires.

Real processes on a real SQLite file and a real PostgreSQL database drive the
state machine through the same `Store` methods the `loop` flow uses
(`rearm`, `begin_retrain`, `transition`, `release`); the retrain itself is a
sleep, since what is under test is who may start one.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

from driftloop.store import Store

PROJECT = "race"


def _cycle(url: str, owner: str, lease_s: float, start_at: float, hold_s: float, queue) -> None:
    """One cycle's state-machine path: rearm, try to start a retrain, 'retrain', gate, cooldown."""
    s = Store(url)
    s.get_state("warm-up")  # connect before the start line, so the race is on the transitions
    time.sleep(max(0.0, start_at - time.time()))
    st = s.rearm(PROJECT, owner, cooldown_seconds=0)
    data = dict(st["data"], breaches=[True])
    started = s.begin_retrain(
        PROJECT, owner, "thumbs_up_rate below the floor", data, lease_s, expected_version=st["version"]
    )
    queue.put((owner, started))
    if started:
        time.sleep(hold_s)  # the retrain; a SIGKILL lands here
        for to, expected in (("evaluating", {"retraining"}), ("rejected", {"evaluating"}), ("cooldown", {"rejected"})):
            assert s.transition(PROJECT, to, f"{owner} {to}", owner, lease_s, expected=expected, data=data)
        s.release(PROJECT, owner)
    s.close()


def _spawn(url: str, owner: str, lease_s: float, start_at: float, hold_s: float, queue):
    p = mp.get_context("spawn").Process(target=_cycle, args=(url, owner, lease_s, start_at, hold_s, queue))
    p.start()
    return p


def test_two_concurrent_cycles_start_exactly_one_retrain(store):
    queue = mp.get_context("spawn").Queue()
    start_at = time.time() + 4  # both processes are connected and waiting by then
    procs = [_spawn(store.url, f"cycle-{i}", 30, start_at, 0.5, queue) for i in range(2)]
    results = dict(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    winners = [o for o, started in results.items() if started]
    assert len(winners) == 1, results
    hist = store.history(PROJECT)
    assert [h["owner"] for h in hist if h["to_state"] == "retraining"] == winners
    assert [h["to_state"] for h in reversed(hist)] == ["triggered", "retraining", "evaluating", "rejected", "cooldown"]
    st = store.get_state(PROJECT)
    assert (st["state"], st["lease_owner"]) == ("cooldown", None)


def test_a_killed_lease_holder_is_recovered_by_the_next_cycle(store):
    queue = mp.get_context("spawn").Queue()
    lease_s = 3.0
    victim = _spawn(store.url, "victim", lease_s, time.time(), 120, queue)
    assert queue.get(timeout=60) == ("victim", True)
    os.kill(victim.pid, signal.SIGKILL)  # mid-retrain, lease still held
    victim.join(timeout=30)
    assert victim.exitcode == -signal.SIGKILL
    killed_at = time.time()

    # Before the lease expires the next cycle must neither steal the state nor start a retrain.
    st = store.rearm(PROJECT, "next", cooldown_seconds=0)
    assert (st["state"], st["lease_owner"]) == ("retraining", "victim")
    assert not store.begin_retrain(PROJECT, "next", "breach", st["data"], 30)

    time.sleep(max(0.0, st["lease_expires"].timestamp() - time.time()) + 0.2)
    assert time.time() - killed_at < lease_s + 5
    st = store.rearm(PROJECT, "next", cooldown_seconds=0)
    assert st["state"] == "armed" and st["lease_owner"] is None
    assert "lease of victim in state retraining expired" in st["reason"]
    assert st["data"]["breaches"] == [True]  # resumed from the recorded data
    assert store.begin_retrain(PROJECT, "next", "breach", st["data"], 30)
    hist = [(h["from_state"], h["to_state"], h["owner"]) for h in reversed(store.history(PROJECT))]
    assert hist == [
        ("armed", "triggered", "victim"),
        ("triggered", "retraining", "victim"),
        ("retraining", "armed", "next"),
        ("armed", "triggered", "next"),
        ("triggered", "retraining", "next"),
    ]
