"""The loop's state machine in one place: its states, the legal transitions, its memory, and `advance`.

    armed -> triggered -> retraining -> evaluating -> promoted | rejected -> cooldown -> armed

Everything here is pure. The store (`driftloop.store.loop`) persists the state with a
compare-and-set under a lease and refuses any edge that `EDGES` does not hold; the
flows and the CLI say what happened (`Event`) and `advance` says where that leads.

    >>> advance(State.ARMED, Event.BREACH)
    <State.TRIGGERED: 'triggered'>
    >>> advance(State.ARMED, Event.PROMOTE)
    Traceback (most recent call last):
    ...
    driftloop.core.loopstate.IllegalTransition: promote is not possible in state armed

`LoopMemory` is what the loop remembers between cycles (breach history, retrain
times, the champion's baseline, what a retrain already answered, the champion's
serving scope); it is stored as JSON in the state row's `data`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from driftloop.core.types import MetricResult

# The longest breach history the loop keeps; `policy.debounce_n` may not exceed it.
MAX_BREACHES = 500
# Retrain times older than this no longer count against the daily budget and are dropped.
BUDGET_PERIOD = timedelta(days=1)


class State(str, Enum):
    ARMED = "armed"
    TRIGGERED = "triggered"
    RETRAINING = "retraining"
    EVALUATING = "evaluating"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    COOLDOWN = "cooldown"


INITIAL = State.ARMED
# States in which a cycle is working and holds the lease; stranded there only by a crash.
ACTIVE = frozenset({State.TRIGGERED, State.RETRAINING, State.EVALUATING, State.PROMOTED, State.REJECTED})


class Event(str, Enum):
    RECORD = "record"  # a cycle records a window's decision; the state stays
    BREACH = "breach"  # decide said RETRAIN and this cycle won the compare-and-set
    START = "start"  # the fine-tune begins (inline, or the event-driven run takes over)
    CANDIDATE = "candidate"  # a challenger is registered and under evaluation
    PROMOTE = "promote"  # the gate passed
    REJECT = "reject"  # the gate failed
    FAIL = "fail"  # the retrain or the evaluation crashed
    NOTHING_TO_TRAIN = "nothing_to_train"  # the regression is real, the training data cannot answer it
    COOL = "cool"  # a verdict is recorded: cool down
    REARM = "rearm"  # the cooldown has elapsed
    RECOVER = "recover"  # a holder's lease expired in an active state (crashed or killed cycle)
    MANUAL = "manual"  # `driftloop promote|rollback` moved the champion by hand


S, E = State, Event
# The legal transitions: (state, event) -> next state. Nothing else moves the loop.
TABLE: dict[tuple[State, Event], State] = {
    **{(s, E.RECORD): s for s in State},
    (S.ARMED, E.BREACH): S.TRIGGERED,
    (S.TRIGGERED, E.START): S.RETRAINING,
    (S.RETRAINING, E.CANDIDATE): S.EVALUATING,
    (S.RETRAINING, E.FAIL): S.COOLDOWN,
    (S.RETRAINING, E.NOTHING_TO_TRAIN): S.COOLDOWN,
    (S.EVALUATING, E.PROMOTE): S.PROMOTED,
    (S.EVALUATING, E.REJECT): S.REJECTED,
    (S.EVALUATING, E.FAIL): S.COOLDOWN,
    (S.PROMOTED, E.COOL): S.COOLDOWN,
    (S.REJECTED, E.COOL): S.COOLDOWN,
    (S.COOLDOWN, E.REARM): S.ARMED,
    # A crashed holder: a retrain not finished is redone; a verdict already taken stands.
    (S.TRIGGERED, E.RECOVER): S.ARMED,
    (S.RETRAINING, E.RECOVER): S.ARMED,
    (S.EVALUATING, E.RECOVER): S.ARMED,
    (S.PROMOTED, E.RECOVER): S.COOLDOWN,
    (S.REJECTED, E.RECOVER): S.COOLDOWN,
    **{(s, E.MANUAL): S.COOLDOWN for s in State},
}
# The edges the store accepts (its compare-and-set refuses any other).
EDGES: frozenset[tuple[State, State]] = frozenset((s, t) for (s, _), t in TABLE.items())


class IllegalTransition(ValueError):
    """An event that the table does not allow in the current state."""


def advance(state: State | str, event: Event | str) -> State:
    """The state that `event` leads to from `state`; IllegalTransition where the table has no such edge."""
    s, e = State(state), Event(event)
    try:
        return TABLE[(s, e)]
    except KeyError:
        raise IllegalTransition(f"{e.value} is not possible in state {s.value}") from None


def legal(from_state: State | str, to_state: State | str) -> bool:
    """Whether some event moves the loop from `from_state` to `to_state`."""
    return (State(from_state), State(to_state)) in EDGES


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Baseline(_Model):
    """The champion's starting point, recorded once per champion version (`policy.relative_drop`)."""

    champion: str | None = None
    metrics: list[MetricResult] = Field(default_factory=list)


class ChampionScope(_Model):
    """Which traffic counts as the serving champion's: events tagged with `version`, and, where a
    source records no version, events at or after `since` (when it took over)."""

    version: str
    since: datetime
    how: str = Field(default="gate", description="gate, manual or rollback.")


class Answered(_Model):
    """Breaches a retrain already acted on (rejected, or nothing to train on): they may trigger again
    only once enough new feedback has arrived."""

    at: datetime
    outcome: str
    breach_keys: list[str] = Field(
        default_factory=list, description="`kind:metric[segment]` of each breach answered (`policy.breach_key`)."
    )
    newest_event: datetime | None = Field(default=None, description="Newest event of the window the retrain acted on.")


class Pending(_Model):
    """Event mode: what the `retrain` deployment needs to finish the cycle that emitted the event."""

    run_id: str
    owner: str
    config: str | None = None
    summary: dict[str, Any] = Field(default_factory=dict)


class TrainingSpend(_Model):
    """One fine-tune's training time, counted against `policy.max_training_hours_per_day`."""

    at: datetime
    seconds: float = Field(ge=0)


class LoopMemory(_Model):
    """What the loop remembers between cycles (the state row's `data`)."""

    breaches: list[bool] = Field(default_factory=list, description="One per recorded window, oldest first.")
    last_retrain_at: datetime | None = None
    retrains: list[datetime] = Field(
        default_factory=list, description="Start times of retrains within the budget period."
    )
    training: list[TrainingSpend] = Field(
        default_factory=list,
        description="Training time of the fine-tunes that trained within the budget period (GPU seconds on a GPU).",
    )
    baseline: Baseline | None = None
    champion: ChampionScope | None = None
    answered: Answered | None = None
    trigger: Answered | None = Field(default=None, description="The breaches the retrain under way is answering.")
    pending: Pending | None = None

    @classmethod
    def load(cls, data: dict[str, Any] | None) -> LoopMemory:
        return cls.model_validate(data or {})

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def record_breach(self, breached: bool) -> None:
        self.breaches = (self.breaches + [breached])[-MAX_BREACHES:]

    def record_retrain(self, now: datetime) -> None:
        self.last_retrain_at = now
        self.retrains = [t for t in self.retrains if now - t < BUDGET_PERIOD] + [now]

    def recent_retrains(self, now: datetime) -> int:
        return sum(1 for t in self.retrains if now - t < BUDGET_PERIOD)

    def record_training(self, now: datetime, seconds: float) -> None:
        """A fine-tune trained `seconds` (its training wall time), finishing now."""
        recent = [t for t in self.training if now - t.at < BUDGET_PERIOD]
        self.training = recent + [TrainingSpend(at=now, seconds=max(0.0, seconds))]

    def recent_training_hours(self, now: datetime) -> float:
        return sum(t.seconds for t in self.training if now - t.at < BUDGET_PERIOD) / 3600

    def start_retrain(self, now: datetime, breach_keys: list[str], newest_event: datetime | None) -> None:
        """A retrain starts now, answering these breaches (see `answer`)."""
        self.record_retrain(now)
        self.trigger = Answered(at=now, outcome="retrain started", breach_keys=breach_keys, newest_event=newest_event)

    def answer(self, outcome: str | None) -> None:
        """The retrain under way ended. With an `outcome` (rejected, nothing to train on) its breaches
        are answered and wait for new feedback; with None (it crashed) they may trigger again."""
        if outcome is not None and self.trigger is not None:
            self.answered = self.trigger.model_copy(update={"outcome": outcome})
        self.trigger = None

    def sync_champion(self, champion: str | None, now: datetime) -> None:
        """The alias was moved outside the loop (in the MLflow UI, say): the new champion's traffic
        starts now, as after a promotion."""
        if champion and self.champion is not None and self.champion.version != champion:
            self.new_champion(champion, now, "external")

    def new_champion(self, version: str, since: datetime, how: str) -> None:
        """A new serving champion: its traffic starts now; what earlier retrains answered is moot."""
        self.champion = ChampionScope(version=version, since=since, how=how)
        self.answered = None
        self.trigger = None
        self.baseline = None
        self.breaches = []
