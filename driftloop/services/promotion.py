"""Moving the champion by hand (promote a version, roll back to the previous one): the use case
behind `driftloop promote|rollback`, apart from argument parsing and printing.

The loop is taken first, through its state machine (any state -> cooldown, refused while a
cycle holds the lease), so no automatic retrain races the human decision; then the alias moves
in one registry call with who and why on an append-only MLflow run, and the webhooks hear of it.

    >>> move_champion(cfg, store, tracker, "3", how="manual", who="ana", reason="hotfix")
    Move(previous='2', version='3', how='manual', who='ana')
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from driftloop.core.config import Config
from driftloop.core.errors import InputError
from driftloop.core.loopstate import Event, LoopMemory, advance
from driftloop.store import Store
from driftloop.tracking import Tracker


@dataclass(frozen=True)
class Move:
    previous: str | None
    version: str
    how: str
    who: str


def move_champion(
    cfg: Config, store: Store, tracker: Tracker, version: str | None, how: str, who: str, reason: str
) -> Move:
    """Point `champion` at `version` (None: the version the current champion replaced, a rollback).

    InputError, with nothing changed, where there is no earlier champion to roll back to or a
    cycle holds the loop's lease.
    """
    current = tracker.alias_version("champion")
    if version is None:
        last = next((h for h in tracker.champion_history() if h["version"] == current), None)
        version = last["previous"] if last else None
        if not version:
            raise InputError(f"rollback: no earlier champion is recorded for version {current}")
    st = store.get_state(cfg.project)
    memory = LoopMemory.load(st["data"])
    # The new champion's traffic starts now; the loop forgets what it answered for the old one.
    memory.new_champion(str(version), datetime.now(UTC), how)
    if not store.transition(
        cfg.project,
        advance(st["state"], Event.MANUAL),
        f"{how} of version {version} by {who}: {reason}"[:500],
        f"{how}:{who}",
        0,
        data=memory.dump(),
        expected={st["state"]},
        expected_version=st["version"],
    ):
        raise InputError(
            f"{how}: a cycle holds the loop (state {st['state']}, lease of {st['lease_owner']}); retry when it ends"
        )
    previous = tracker.move_champion(version, by=who, reason=reason, how=how)
    _alert(cfg, store, tracker, how, str(version), previous, who, reason)
    return Move(previous=previous, version=str(version), how=how, who=who)


def _alert(
    cfg: Config, store: Store, tracker: Tracker, how: str, version: str, previous: str | None, who: str, reason: str
) -> None:
    """`champion.rolled_back` or `candidate.promoted` (how=manual) to the webhooks; never raises."""
    from driftloop.alerts import send

    if not cfg.alerts.webhooks:
        return
    try:
        last = tracker.champion_history(limit=1)  # the promotion run just written: the alert links to it
    except Exception:  # noqa: BLE001 - the move is done; an alert without a link beats a failed command
        last = []
    send(
        cfg,
        store,
        "champion.rolled_back" if how == "rollback" else "candidate.promoted",
        model_version=version,
        previous_version=previous,
        reasons=[f"{how} by {who}: {reason}"],
        run_id=last[0]["run_id"] if last else None,
        experiment_id=tracker.experiment_id,
        data={"how": how, "by": who},
    )
