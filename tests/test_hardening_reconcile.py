"""Reconcile on start: a cycle that recorded `promoted` and died before moving the `champion`
alias leaves a state the next cycle finishes (alias moved, state on to cooldown, a log line),
or rolls back where the version is gone; `driftloop status` shows it meanwhile.

The registry is a small in-memory stand-in with the tracker's three methods that reconciling
uses (alias_version, version_exists, move_champion).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from types import SimpleNamespace

from driftloop.core.config import load_config
from driftloop.core.loopstate import Event, LoopMemory, State
from driftloop.services import cycle
from driftloop.services.reconcile import reconcile, stranded
from driftloop.store import Store

P = "demo"
LEASE = 0.2


class Registry:
    def __init__(self, champion: str, versions: set[str]) -> None:
        self.champion: str | None = champion
        self.versions = versions
        self.moves: list[tuple[str, str]] = []

    def alias_version(self, alias: str) -> str | None:
        return self.champion if alias == "champion" else None

    def version_exists(self, version: str) -> bool:
        return version in self.versions

    def move_champion(self, version: str, by: str, reason: str, how: str) -> str | None:
        previous, self.champion = self.champion, version
        self.moves.append((version, by))
        return previous


def crashed_after_recording_promoted(store: Store, version: str) -> None:
    """What the process leaves: `promoted` with version `version` as the champion in memory, the
    alias never moved, the holder's lease lapsed."""
    memory = LoopMemory()
    memory.new_champion("1", datetime(2026, 11, 1, tzinfo=UTC), "gate")
    assert store.begin_retrain(P, "cycle-A", "breach", memory.dump(), LEASE)
    cycle.step(store, P, "cycle-A", State.RETRAINING, Event.CANDIDATE, "challenger", memory, LEASE)
    memory.new_champion(version, datetime.now(UTC), "gate")
    cycle.step(store, P, "cycle-A", State.EVALUATING, Event.PROMOTE, f"promoted version {version}", memory, LEASE)
    time.sleep(LEASE + 0.1)  # ... and then the process died


def test_the_next_cycle_finishes_a_promotion_a_crash_left_half_done(sqlite_store):
    from flows.loop import _rearm

    registry = Registry("1", {"1", "2"})
    crashed_after_recording_promoted(sqlite_store, "2")
    assert stranded(sqlite_store.get_state(P), registry.alias_version("champion")) is not None
    cfg = load_config(None, env={}, check_files=False, overrides={"project": P, "policy": {"cooldown_hours": 24}})
    ctx = SimpleNamespace(cfg=cfg, store=sqlite_store, tracker=registry)
    records: list[logging.LogRecord] = []
    catch = logging.Handler(logging.WARNING)
    catch.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("driftloop")  # flows.common.log() outside a flow run
    logger.addHandler(catch)
    level = logger.level
    logger.setLevel(logging.INFO)  # whatever an earlier test left it at
    try:
        st = _rearm(ctx, "cycle-B")  # the start of the next cycle
    finally:
        logger.removeHandler(catch)
        logger.setLevel(level)
    assert registry.champion == "2"
    assert registry.moves == [("2", "reconcile")]
    assert st["state"] == "cooldown"
    assert LoopMemory.load(st["data"]).champion.version == "2"
    assert "reconciled: finished the promotion of version 2" in st["reason"]
    warned = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert any(m.startswith("loop state: reconciled: finished the promotion of version 2") for m in warned), warned
    assert stranded(sqlite_store.get_state(P), registry.alias_version("champion")) is None
    # A second start finds nothing to do: the alias is not moved again.
    assert reconcile(sqlite_store, registry, P, "cycle-C") is None
    assert registry.moves == [("2", "reconcile")]


def test_a_promotion_of_a_version_gone_from_the_registry_is_rolled_back(sqlite_store):
    registry = Registry("1", {"1"})  # version 2 was deleted meanwhile
    crashed_after_recording_promoted(sqlite_store, "2")
    done = reconcile(sqlite_store, registry, P, "cycle-B")
    assert done is not None and done.action == "rolled back"
    st = sqlite_store.get_state(P)
    assert registry.champion == "1" and registry.moves == []
    assert st["state"] == "cooldown"
    assert LoopMemory.load(st["data"]).champion.version == "1"


def test_a_live_promoter_is_left_alone(sqlite_store):
    registry = Registry("1", {"1", "2"})
    memory = LoopMemory()
    assert sqlite_store.begin_retrain(P, "cycle-A", "breach", {}, 60)
    cycle.step(sqlite_store, P, "cycle-A", State.RETRAINING, Event.CANDIDATE, "challenger", memory, 60)
    memory.new_champion("2", datetime.now(UTC), "gate")
    cycle.step(sqlite_store, P, "cycle-A", State.EVALUATING, Event.PROMOTE, "promoted version 2", memory, 60)
    assert reconcile(sqlite_store, registry, P, "cycle-B") is None  # A may be moving the alias right now
    assert registry.champion == "1" and sqlite_store.get_state(P)["state"] == "promoted"


def test_status_shows_a_half_done_promotion(tmp_path, monkeypatch, capsys):
    import driftloop.tracking
    from driftloop.app import report

    cfg = load_config(None, env={}, check_files=False, overrides={"project": P, "state_dir": str(tmp_path / "state")})
    cfg.state_path.mkdir(parents=True)
    store = Store(cfg.store_url)
    store.migrate()
    crashed_after_recording_promoted(store, "2")
    store.close()
    monkeypatch.setattr(
        driftloop.tracking, "alias_versions", lambda cfg, aliases: {"champion": "1", "challenger": None}
    )
    report.status(cfg)
    out = capsys.readouterr().out
    assert "reconcile: the loop recorded the promotion of version 2 but champion is 1" in out
