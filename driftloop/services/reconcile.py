"""Reconciling the loop's state with the registry after a crash between "promoted" and the alias move.

A cycle records `promoted` (with the new champion in the loop's memory) and moves MLflow's
`champion` alias. A process that died in between left the state saying version V won while
the alias still names the old champion. At the start of the next cycle `reconcile` finishes
that promotion: the gate's verdict was recorded, the loop's memory already counts V's traffic
as the champion's, and a stranded `promoted` state goes on to cooldown as after any crash
("a verdict already taken stands"). Only where V is gone from the registry is the promotion
rolled back: the loop's memory takes the alias's version as the champion again. Either way the
state ends in `cooldown` with the reason in its history, and the caller logs it.

    >>> reconcile(store, tracker, "demo", owner="cycle-ab12")
    Reconciled(action='finished', version='3', alias='2', ...)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from driftloop.core.loopstate import Event, LoopMemory, State, advance
from driftloop.store import Store


class Registry(Protocol):
    """What reconciling needs of the tracker (`driftloop.tracking.Tracker`)."""

    def alias_version(self, alias: str) -> str | None: ...

    def version_exists(self, version: str) -> bool: ...

    def move_champion(self, version: str, by: str, reason: str, how: str) -> str | None: ...


class Stranded(BaseModel):
    """A state that says `version` was promoted while `champion` names `alias`, its holder gone."""

    version: str
    alias: str | None
    holder: str | None

    def describe(self) -> str:
        return (
            f"the loop recorded the promotion of version {self.version} but champion is "
            f"{self.alias or 'unset'} (the promoting cycle {self.holder or '?'} stopped before moving it)"
        )


class Reconciled(BaseModel):
    """What `reconcile` did: `finished` (the alias moved to `version`) or `rolled back` (it stayed)."""

    action: Literal["finished", "rolled back"]
    version: str
    alias: str | None
    reason: str


def stranded(st: dict[str, Any], alias: str | None, now: datetime | None = None) -> Stranded | None:
    """The state row `st` (`Store.get_state`) read against the alias: a promotion left half-done?

    Only a `promoted` state whose holder's lease has lapsed or been released counts; a live
    holder may be about to move the alias.
    """
    if st["state"] != State.PROMOTED.value:
        return None
    now = now or datetime.now(UTC)
    expires = st.get("lease_expires")
    if st.get("lease_owner") and expires is not None and expires > now:
        return None
    champion = LoopMemory.load(st.get("data")).champion
    if champion is None or champion.version == alias:
        return None
    return Stranded(version=champion.version, alias=alias, holder=st.get("lease_owner"))


def reconcile(store: Store, registry: Registry, project: str, owner: str) -> Reconciled | None:
    """Finish (or, where the version is gone, roll back) a promotion a crash left half-done.

    None where there is nothing to reconcile or another cycle got there first. The state goes on
    to `cooldown` in a compare-and-set over the row this read, so of racing cycles one reconciles.
    """
    st = store.get_state(project)
    found = stranded(st, registry.alias_version("champion"))
    if found is None:
        return None
    memory = LoopMemory.load(st["data"])
    now = datetime.now(UTC)
    if registry.version_exists(found.version):
        action: Literal["finished", "rolled back"] = "finished"
        reason = f"reconciled: finished the promotion of version {found.version} ({found.describe()})"
    else:
        action = "rolled back"
        reason = (
            f"reconciled: rolled back the promotion of version {found.version}, no longer in the registry; "
            f"champion stays {found.alias or 'unset'}"
        )
        if found.alias:
            memory.new_champion(found.alias, now, "rollback")
    # Claim the row first (a renewal of `promoted` under this owner): of racing cycles one moves the alias.
    if not store.transition(
        project,
        advance(State.PROMOTED, Event.RECORD),
        reason[:500],
        owner,
        300,
        expected={State.PROMOTED.value},
        data=memory.dump(),
        expected_version=st["version"],
    ):
        return None
    if action == "finished":
        registry.move_champion(found.version, by="reconcile", reason=reason, how="gate")
    store.transition(
        project,
        advance(State.PROMOTED, Event.RECOVER),
        reason[:500],
        owner,
        0,
        expected={State.PROMOTED.value},
        data=memory.dump(),
        holder=True,
    )
    store.release(project, owner)
    return Reconciled(action=action, version=found.version, alias=found.alias, reason=reason)
