"""Judge a monitored window: read the texts the judges need, score them, calibrate, estimate.

For each configured judge (`judges:` in driftloop.yaml), `judge_window_events` scores the
current window's events through the verdict cache under `<state_dir>/judges/cache.db`
and within the judge's call budget, measures its agreement with the humans, and returns
the PPI++ estimates of the metric it stands in for (`evaluators.judges.estimate`). Only
the texts of the window's events are read, each cut to `MAX_CHARS`. Given a `window_key`
(the reference window's content fingerprint), the result is kept under
`<state_dir>/judges/windows` (`evaluators.judges.window_cache`), and an unchanged window
judged by unchanged judges is neither read nor judged again.

    >>> out = judge_window_events(cfg, store, frame, w.current_start, w.current_end, log.info)
    >>> [c.overall.kappa for c in out.calibrations], out.window.findings[0].kind
    ([0.81], 'judge_trusted')
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from driftloop.core.config import Config, JudgeSpec
from driftloop.core.judging import JudgeCalibration, JudgedWindow
from driftloop.core.types import MetricResult
from driftloop.store.models import Feedback

if TYPE_CHECKING:
    import pandas as pd

    from driftloop.core.config import JudgeSpec
    from driftloop.store import Store
    from evaluators.judges.backends import Judge
    from evaluators.judges.rubric import Item

MAX_CHARS = 8_000  # characters of each prompt, response and correction a judge reads
_CHUNK = 500  # event ids per SELECT


@dataclass
class JudgedEvents:
    calibrations: list[JudgeCalibration] = field(default_factory=list)
    window: JudgedWindow = field(default_factory=JudgedWindow)
    stored: bool = False  # the whole result came from the judged-window store (nothing read or judged)


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


def window_judges_key(window_key: str, judges: list[tuple[JudgeSpec, Judge]], segment_fields: list[str]) -> str:
    """What identifies a judged window's result: the window's key, each judge's spec, model
    fingerprint and rubric, and the segment fields its figures are split by."""
    ident = {
        "window": window_key,
        "judges": [[s.model_dump(mode="json"), j.fingerprint, j.rubric.hash] for s, j in judges],
        "segments": list(segment_fields),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode("utf-8")).hexdigest()[:32]


def judge_window_events(
    cfg: Config,
    store: Store,
    frame: pd.DataFrame | Callable[[], pd.DataFrame],
    start: datetime,
    end: datetime,
    say: Callable[[str], None] = lambda _: None,
    window_key: str | None = None,
) -> JudgedEvents:
    """Every configured judge on the window of [start, end); `say` gets progress lines.

    `frame` is the window's frame, or a function that reads it (called only where the result
    is not stored already). `window_key`: store the result under it (and the judges'
    identities), and return a stored one without reading or judging; a result with events
    left over the call budget is not stored, so the next pass judges them.
    """
    if not cfg.judges or (not callable(frame) and frame.empty):
        return JudgedEvents()
    from evaluators.judges.backends import make_judge
    from evaluators.judges.cache import JudgeCache
    from evaluators.judges.estimate import combine, human_labels, judge_window
    from evaluators.judges.scoring import score_window
    from evaluators.judges.window_cache import JudgedWindowCache

    judges = [(spec, make_judge(resolved(spec, cfg), cfg.base_dir)) for spec in cfg.judges]
    memo, key = JudgedWindowCache(cfg.state_path / "judges" / "windows"), ""
    if window_key is not None:
        key = window_judges_key(window_key, judges, list(cfg.monitor.segment_fields))
        hit = memo.get(key)
        if hit is not None:
            say(f"judges: window unchanged since it was judged, {len(hit[0])} judge(s) from the judged-window store")
            spent = {"calls": 0, "tokens": 0, "seconds": 0.0}
            return JudgedEvents([c.model_copy(update=spent) for c in hit[0]], hit[1], stored=True)
    if callable(frame):
        frame = frame()
        if frame.empty:
            return JudgedEvents()
    cache = JudgeCache(cfg.state_path / "judges" / "cache.db")
    outcomes, calibrations = [], []
    for spec, judge in judges:
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
            update={"calls": run.calls, "over_budget": run.over_budget, "tokens": run.tokens, "seconds": run.seconds}
        )
        say(
            f"judge {spec.name}: {outcome.calibration.judged} events judged ({run.calls} new, "
            f"{run.over_budget} over the budget of {spec.max_calls}; {run.tokens} tokens, {run.seconds:.1f} s); "
            f"{outcome.window.findings[0].kind}"
        )
        outcomes.append(outcome)
        calibrations.append(outcome.calibration)
    out = JudgedEvents(calibrations, combine(outcomes))
    if window_key is not None and not any(c.over_budget for c in calibrations):
        memo.put(key, out.calibrations, out.window)
    return out


def resolved(spec: JudgeSpec, cfg: Config) -> JudgeSpec:
    """`spec` with an `hf` backend's `model: demo` replaced by the demo model's folder (built on first use)."""
    from driftloop.core.config import DEMO_MODEL
    from driftloop.core.config_judges import HFBackend

    if not isinstance(spec.backend, HFBackend) or spec.backend.model != DEMO_MODEL:
        return spec
    from retrain.base_model import build_demo_model

    folder = build_demo_model(cfg.state_path / "cache" / "demo-model")
    return spec.model_copy(update={"backend": spec.backend.model_copy(update={"model": str(folder)})})


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
        # What judging cost this pass: new verdicts, tokens read, seconds waited (0 where all were cached).
        for name, value in (("judge_calls", cal.calls), ("judge_tokens", cal.tokens), ("judge_seconds", cal.seconds)):
            out.append(
                MetricResult(
                    name=name,
                    value=float(value),
                    n=cal.calls,
                    source="quality",
                    direction="lower",
                    segment={"judge": cal.judge},
                )
            )
    if judged is not None:
        for m in judged.estimates + judged.shown:
            out.append(m.model_copy(update={"name": f"{m.name}_ppi"}))
    return out
