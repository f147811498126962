"""The loop's persisted state machine: compare-and-set transitions under a lease.

`transition` is the only way the state changes. It succeeds for exactly one of
several racing processes: it checks the expected state and the lease, then
writes with `UPDATE ... WHERE version = :v` (or, for the first transition of a
project, `INSERT ... ON CONFLICT DO NOTHING`), and appends the history row in
the same transaction. A crashed owner's lease simply expires.

    >>> store.transition("demo", "triggered", "thumbs-up rate fell", owner="flow-1",
    ...                  expected={"armed"})
    True
    >>> store.get_state("demo")["state"]
    'triggered'

The states, the legal edges and the loop's memory live in `driftloop.core.loopstate`;
this module only persists them: `transition` refuses any edge the table does not
hold (IllegalTransition), whatever the caller expected.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select, update

from driftloop.core.loopstate import ACTIVE, INITIAL, Event, IllegalTransition, State, advance, legal
from driftloop.store.engine import insert_ignore
from driftloop.store.models import LoopState, LoopTransition, utcnow

INITIAL_STATE = INITIAL.value
ACTIVE_STATES = tuple(sorted(s.value for s in ACTIVE))
_STATE = LoopState.__table__
_HISTORY = LoopTransition.__table__


class LoopStateMixin:
    """Loop-state methods of `Store` (kept apart so each module stays small)."""

    engine: Engine
    _writer: Engine

    def get_state(self, project: str) -> dict[str, Any]:
        """The project's state row as a dict; a project never seen is `armed` since now.

        Keys: project, state, since, reason, data, lease_owner, lease_expires
        (aware UTC or None) and version (0 for a project with no row yet).
        """
        with self.engine.connect() as conn:
            row = conn.execute(select(_STATE).where(_STATE.c.project == project)).mappings().first()
        if row is None:
            return {
                "project": project,
                "state": INITIAL_STATE,
                "since": utcnow(),
                "reason": "",
                "data": {},
                "lease_owner": None,
                "lease_expires": None,
                "version": 0,
            }
        return dict(row)

    def transition(
        self,
        project: str,
        to_state: str | State,
        reason: str,
        owner: str,
        lease_seconds: float = 600,
        expected: set[str] | None = None,
        data: dict[str, Any] | None = None,
        expected_version: int | None = None,
        holder: bool = False,
    ) -> bool:
        """Move `project` to `to_state` if nobody else may; return whether it happened.

        Refused (False, nothing written) when the current state is not in
        `expected` (None accepts any), when the row's version is not
        `expected_version` (given by a caller whose `data` was read at that
        version, so it never overwrites newer data), when another owner holds a
        lease that has not expired, or when another process changed the row in
        between. With `holder` (a write by a cycle that acquired the lease earlier) it is
        also refused unless the row still names `owner` as its lease holder, checked in the
        UPDATE itself: owner ids are minted once per acquisition, so a holder whose lease
        lapsed and was taken over (recovered, released, re-acquired) is fenced off, however
        the later holders' leases stand. On
        success the state, reason and data (None means `{}`) are replaced,
        `since` becomes now unless the state is unchanged (a renewal), `owner`
        holds the lease for `lease_seconds` seconds, and a history row is added.
        """
        with self._writer.begin() as conn:
            row = conn.execute(select(_STATE).where(_STATE.c.project == project)).mappings().first()
            return self._write(
                conn,
                project,
                row,
                State(to_state).value,
                reason,
                owner,
                lease_seconds,
                expected,
                data,
                expected_version,
                holder,
            )

    def _write(
        self,
        conn: Any,
        project: str,
        row: Any,
        to_state: str,
        reason: str,
        owner: str,
        lease_seconds: float,
        expected: set[str] | None,
        data: dict[str, Any] | None,
        expected_version: int | None,
        holder: bool,
    ) -> bool:
        """`transition`'s checks and writes inside the caller's transaction over `row` (read in it)."""
        now = utcnow()
        current = row["state"] if row is not None else INITIAL_STATE
        if expected is not None and current not in expected:
            return False
        if not legal(current, to_state):
            raise IllegalTransition(f"loop state of {project}: {current} -> {to_state} is not a legal transition")
        if expected_version is not None and (row["version"] if row is not None else 0) != expected_version:
            return False
        if row is not None and _leased_by_other(row, owner, now):
            return False
        if holder and (row is None or row["lease_owner"] != owner):
            return False
        values = {
            "state": to_state,
            "since": row["since"] if row is not None and to_state == current else now,
            "reason": reason,
            "data": data or {},
            "lease_owner": owner,
            "lease_expires": now + timedelta(seconds=lease_seconds),
        }
        if row is None:
            # Two first transitions race on the primary key: one row wins.
            if insert_ignore(conn, _STATE, [{"project": project, "version": 1, **values}], ["project"]) == 0:
                return False
        else:
            fence = [_STATE.c.lease_owner == owner] if holder else []
            res = conn.execute(
                update(_STATE)
                .where(_STATE.c.project == project, _STATE.c.version == row["version"], *fence)
                .values(version=row["version"] + 1, **values)
            )
            if res.rowcount != 1:
                return False
        conn.execute(
            insert(_HISTORY).values(
                project=project,
                from_state=current,
                to_state=to_state,
                reason=reason,
                owner=owner,
                at=now,
                data=data or {},
            )
        )
        return True

    def rearm(self, project: str, owner: str, cooldown_seconds: float) -> dict[str, Any]:
        """Start-of-cycle housekeeping; returns the state the cycle then sees.

        Leaves `cooldown` for `armed` once `cooldown_seconds` have passed since
        it began, and puts a cycle stranded in triggered/retraining/evaluating
        back to `armed` once its holder's lease has expired (a crashed or
        killed cycle): the next retrain starts from the recorded data (breach
        history, retrain budget); one stranded in promoted/rejected goes on to
        `cooldown`. A live holder's state is left alone.
        """
        st = self.get_state(project)
        now = utcnow()
        if st["state"] == State.COOLDOWN and (now - st["since"]).total_seconds() >= cooldown_seconds:
            # Lease 0: housekeeping holds nothing, so a crash right here blocks no one.
            self.transition(
                project,
                advance(State.COOLDOWN, Event.REARM),
                "cooldown elapsed",
                owner,
                0,
                expected={"cooldown"},
                data=st["data"],
            )
            self.release(project, owner)
        elif st["state"] in ACTIVE_STATES and not _leased_by_other(st, owner, now):
            holder = st["lease_owner"] or "nobody"
            # A gate verdict already taken stands (on to cooldown); otherwise the retrain is redone (armed).
            to = advance(st["state"], Event.RECOVER)
            if self.transition(
                project,
                to,
                f"recovered: the lease of {holder} in state {st['state']} expired (crashed or killed cycle)",
                owner,
                0,
                expected={st["state"]},
                data=st["data"],
            ):
                self.release(project, owner)
        return self.get_state(project)

    def begin_retrain(
        self,
        project: str,
        owner: str,
        reason: str,
        data: dict[str, Any],
        lease_seconds: float,
        expected_version: int | None = None,
    ) -> bool:
        """armed -> triggered -> retraining under `owner`'s lease; False (nothing started) if
        the loop is not armed, another cycle holds it, or (with `expected_version`) the state
        changed since the caller read `data`. Of racing cycles exactly one gets True."""
        triggered = advance(State.ARMED, Event.BREACH)
        if not self.transition(
            project,
            triggered,
            reason,
            owner,
            lease_seconds,
            expected={State.ARMED.value},
            data=data,
            expected_version=expected_version,
        ):
            return False
        return self.transition(
            project,
            advance(triggered, Event.START),
            "retrain started",
            owner,
            lease_seconds,
            expected={triggered.value},
            data=data,
            holder=True,
        )

    def promote(
        self,
        project: str,
        owner: str,
        reason: str,
        data: dict[str, Any],
        lease_seconds: float,
        move: Callable[[], object],
    ) -> bool:
        """evaluating -> promoted under `owner`'s lease, and `move` (the alias move) in the same transaction.

        The fenced write (the row must still name `owner` as its holder) comes first and holds the
        row's write lock while `move` runs, so no cycle can recover or take the loop in between; a
        refused write returns False and `move` never runs. If `move` raises, the state is rolled
        back and the exception propagates: the alias and the state never disagree by the state's
        doing (a crash after `move` and before the commit leaves the alias moved and the state
        `evaluating`, which the next cycle recovers as after any crash).
        """
        to = advance(State.EVALUATING, Event.PROMOTE).value
        with self._writer.begin() as conn:
            row = conn.execute(select(_STATE).where(_STATE.c.project == project)).mappings().first()
            expected = {State.EVALUATING.value}
            if not self._write(conn, project, row, to, reason, owner, lease_seconds, expected, data, None, True):
                return False
            move()
        return True

    def release(self, project: str, owner: str) -> bool:
        """Give up `owner`'s lease on `project` (the state stays); False if it held none."""
        with self._writer.begin() as conn:
            res = conn.execute(
                update(_STATE)
                .where(_STATE.c.project == project, _STATE.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires=None, version=_STATE.c.version + 1)
            )
        return res.rowcount == 1

    def history(self, project: str, limit: int = 50) -> list[dict[str, Any]]:
        """The project's latest transitions, newest first (id, from_state, to_state, reason, owner, at, data)."""
        stmt = select(_HISTORY).where(_HISTORY.c.project == project).order_by(_HISTORY.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]


def _leased_by_other(row: Any, owner: str, now: datetime) -> bool:
    holder, expires = row["lease_owner"], row["lease_expires"]
    return holder is not None and holder != owner and expires is not None and expires > now
