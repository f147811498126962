"""Judge a monitored window: read the texts the judges need, score them, calibrate, estimate.

For each configured judge (`judges:` in driftloop.yaml), `judge_window_events` scores the
current window's events through the verdict cache under `<state_dir>/judges/cache.db`
and within the judge's call budget, measures its agreement with the humans, and returns
the PPI++ estimates of the metric it stands in for (`evaluators.judges.estimate`). Only
the texts of the events to be judged are read, each cut to `MAX_CHARS`.

    >>> out = judge_window_events(cfg, store, frame, w.current_start, w.current_end, log.info)
    >>> [c.overall.kappa for c in out.calibrations], out.window.findings[0].kind
    ([0.81], 'judge_trusted')
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from driftloop.core.config import Config
from driftloop.core.judging import JudgeCalibration, JudgedWindow
from driftloop.core.types import MetricResult
from driftloop.store.models import Feedback

if TYPE_CHECKING:
    import pandas as pd

    from driftloop.store import Store
    from evaluators.judges.rubric import Item

MAX_CHARS = 8_000  # characters of each prompt, response and correction a judge reads
_CHUNK = 500  # event ids per SELECT


@dataclass
class JudgedEvents:
    calibrations: list[JudgeCalibration] = field(default_factory=list)
    window: JudgedWindow = field(default_factory=JudgedWindow)


def read_texts(store: Store, start: datetime, end: datetime, event_ids: list[str]) -> dict[str, Item]:
    """Prompt, response and correction of these events of [start, end), by event id (first one of a
    duplicated id), each cut to `MAX_CHARS` by the database."""
    from sqlalchemy import func

    from evaluators.judges.rubric import Item

    f = Feedback.__table__.c
    out: dict[str, Item] = {}
    with store.engine.connect() as conn:
        for i in range(0, len(event_ids), _CHUNK):
            chunk = event_ids[i : i + _CHUNK]
            stmt = select(
                f.event_id,
                func.substr(f.prompt, 1, MAX_CHARS),
                func.substr(f.response, 1, MAX_CHARS),
                func.substr(f.correction, 1, MAX_CHARS),
            ).where(f.ts >= start, f.ts < end, f.event_id.in_(chunk))
            for eid, prompt, response, correction in conn.execute(stmt):
                out.setdefault(str(eid), Item(prompt or "", response or "", correction))
    return out


def _progress(say: Callable[[str], None], name: str, done: int, total: int) -> None:
    say(f"judge {name}: {done}/{total} new verdicts")


def judge_window_events(
    cfg: Config,
    store: Store,
    frame: pd.DataFrame,
    start: datetime,
    end: datetime,
    say: Callable[[str], None] = lambda _: None,
) -> JudgedEvents:
    """Every configured judge on the window `frame` of [start, end); `say` gets progress lines."""
    if not cfg.judges or frame.empty:
        return JudgedEvents()
    from evaluators.judges.backends import make_judge
    from evaluators.judges.cache import JudgeCache
    from evaluators.judges.estimate import combine, human_labels, judge_window
    from evaluators.judges.scoring import score_window

    cache = JudgeCache(cfg.state_path / "judges" / "cache.db")
    outcomes, calibrations = [], []
    for spec in cfg.judges:
        judge = make_judge(spec, cfg.base_dir)
        human = human_labels(frame, spec.label)
        run = score_window(
            judge,
            frame,
            human,
            cache,
            spec.max_calls,
            texts=lambda ids: read_texts(store, start, end, ids),
            progress=functools.partial(_progress, say, spec.name),
        )
        outcome = judge_window(frame, run.scores, spec, list(cfg.monitor.segment_fields))
        outcome.calibration = outcome.calibration.model_copy(
            update={"calls": run.calls, "over_budget": run.over_budget}
        )
        say(
            f"judge {spec.name}: {outcome.calibration.judged} events judged ({run.calls} new, "
            f"{run.over_budget} over the budget of {spec.max_calls}); {outcome.window.findings[0].kind}"
        )
        outcomes.append(outcome)
        calibrations.append(outcome.calibration)
    return JudgedEvents(calibrations, combine(outcomes))


def judge_figures(calibrations: list[JudgeCalibration], judged: JudgedWindow | None) -> list[MetricResult]:
    """What to log of the judges: each one's kappa (overall and per segment group, segment `judge`
    added) and the PPI++ estimates, used and shown, as `<metric>_ppi`, so they never share a
    key with the human-only figures."""
    out = []
    for cal in calibrations:
        for a in [cal.overall, *cal.segments]:
            out.append(
                MetricResult(
                    name="judge_kappa",
                    value=a.kappa,
                    ci_low=a.kappa_low,
                    ci_high=a.kappa_high,
                    n=a.n,
                    source="quality",
                    segment={"judge": cal.judge, **a.segment},
                    note=f"vs human {cal.label}; {cal.judged} judged, {cal.calls} new verdicts, {cal.over_budget} over budget",
                )
            )
    if judged is not None:
        for m in judged.estimates + judged.shown:
            out.append(m.model_copy(update={"name": f"{m.name}_ppi"}))
    return out
