"""Monitoring windows: which events are "current" and which are the "reference".

The current window ends just after the newest event and slides with it, by time
(`current_days`) or by event count (`current_events`). The reference is the window
just before it (`preceding`), the window the serving champion was promoted on
(`champion`), or a fixed baseline (`pinned`). All of it is set in `monitor.windows`.
`windows` is a pure function over timestamps; `resolve_windows` asks the store for
the timestamps that count-based windows need.

    >>> w = windows(first, last, WindowConfig(current_days=1, reference_days=7))
    >>> w.current_start == last + EPS - timedelta(days=1)
    True
    >>> resolve_windows(store, WindowConfig(slide_by="events", current_events=10_000)).current_start
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from driftloop.core.config import WindowConfig
from driftloop.store.models import Feedback

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from driftloop.core.loopstate import ChampionScope
    from driftloop.store import Store

# The windows are half-open [start, end); nudge the current end past the newest event.
EPS = timedelta(microseconds=1)


@dataclass(frozen=True)
class Windows:
    reference_start: datetime
    reference_end: datetime
    current_start: datetime
    current_end: datetime
    # Where the reference came from, e.g. "preceding 7 days" or "champion version 3 (cycle run ab12)".
    reference_source: str = "preceding"

    def as_dict(self) -> dict[str, str]:
        return {k: v.isoformat() if isinstance(v, datetime) else str(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> Windows:
        """Inverse of `as_dict`."""
        times = {
            k: datetime.fromisoformat(d[k])
            for k in ("reference_start", "reference_end", "current_start", "current_end")
        }
        return cls(**times, reference_source=d.get("reference_source", "preceding"))


def windows(first: datetime, last: datetime, cfg: WindowConfig) -> Windows:
    """Time-sliding windows for events spanning [first, last]: the current window holds the last
    `current_days` and the reference the `reference_days` before it (never before `first`), or
    the pinned window where `cfg.reference` is "pinned"."""
    cur_end = last + EPS
    cur_start = cur_end - timedelta(days=cfg.current_days)
    if cfg.reference == "pinned":
        return Windows(*_pinned(cfg), cur_start, cur_end, "pinned")
    ref_start = max(first, cur_start - timedelta(days=cfg.reference_days))
    return Windows(ref_start, cur_start, cur_start, cur_end, f"preceding {cfg.reference_days:g} days")


def resolve_windows(
    store: Store, cfg: WindowConfig, champion: Windows | None = None, champion_label: str = "champion"
) -> Windows | None:
    """The windows `cfg` describes over the events in `store`; None when the store is empty.

    slide_by "events": the current window starts at the timestamp of the `current_events`-th
    newest event (ties included), and a preceding reference at that of the
    (`current_events` + `reference_events`)-th newest (or the oldest event). reference
    "champion" uses `champion` (the current window of the run that promoted the champion,
    see `champion_window`); without one it falls back to the preceding window and says so
    in `reference_source`.
    """
    bounds = store.time_bounds()
    if bounds is None:
        return None
    first, last = bounds
    if cfg.slide_by == "time":
        w = windows(first, last, cfg)
    else:
        cur_start = nth_newest_ts(store, cfg.current_events) or first
        if cfg.reference == "pinned":
            w = Windows(*_pinned(cfg), cur_start, last + EPS, "pinned")
        else:
            ref_start = nth_newest_ts(store, cfg.current_events + cfg.reference_events) or first
            w = Windows(
                min(ref_start, cur_start), cur_start, cur_start, last + EPS, f"preceding {cfg.reference_events} events"
            )
    if cfg.reference != "champion":
        return w
    if champion is None:
        return Windows(
            w.reference_start,
            w.reference_end,
            w.current_start,
            w.current_end,
            f"{w.reference_source} (no monitored window for the {champion_label})",
        )
    return Windows(champion.current_start, champion.current_end, w.current_start, w.current_end, champion_label)


def in_scope(versions: np.ndarray, ts: pd.Series, scope: ChampionScope) -> np.ndarray:
    """Which events are the serving champion's traffic: tagged with its version, or untagged and at or
    after it took over (a source that records no version). Events tagged with another version never are."""
    import numpy as np
    import pandas as pd

    tagged = versions == scope.version
    untagged = (versions == "") | pd.isna(versions)
    since = pd.Timestamp(scope.since)
    return np.asarray(tagged | (untagged & (ts >= since).to_numpy()), dtype=bool)


def _pinned(cfg: WindowConfig) -> tuple[datetime, datetime]:
    # WindowConfig's validator makes both bounds present whenever reference is "pinned".
    assert cfg.pinned_start is not None and cfg.pinned_end is not None
    return cfg.pinned_start, cfg.pinned_end


def nth_newest_ts(store: Store, n: int) -> datetime | None:
    """Timestamp of the n-th newest event (1 = newest), or None when there are fewer than n."""
    f = Feedback.__table__.c
    with store.engine.connect() as conn:
        return conn.execute(select(f.ts).order_by(f.ts.desc()).limit(1).offset(n - 1)).scalar_one_or_none()


def window_fingerprint(store: Store, start: datetime, end: datetime) -> dict[str, Any]:
    """What identifies a window's content cheaply: bounds, event count and its newest and
    oldest timestamps (late events arriving into the window change the count)."""
    f = Feedback.__table__.c
    with store.engine.connect() as conn:
        n, lo, hi = conn.execute(
            select(func.count(), func.min(f.ts), func.max(f.ts)).where(f.ts >= start, f.ts < end)
        ).one()
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "n": int(n),
        "oldest": lo.isoformat() if lo else None,
        "newest": hi.isoformat() if hi else None,
    }


def record_window(path: Path, key: str, w: Windows) -> None:
    """Remember the windows a monitor run used under `key` (a cycle's MLflow run id), so a later
    run can take the champion's promotion window as its reference. Keeps the newest 500."""
    book = _read(path)
    book.pop(key, None)
    book[key] = w.as_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(list(book.items())[-500:]), indent=1), encoding="utf-8")
    tmp.replace(path)


def champion_window(path: Path, key: str | None) -> Windows | None:
    """The windows recorded under `key` by `record_window`, or None."""
    if not key:
        return None
    d = _read(path).get(key)
    return Windows.from_dict(d) if d else None


def _read(path: Path) -> dict[str, dict[str, str]]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def read_prompt_sample(store: Store, start: datetime, end: datetime, n: int, max_chars: int) -> list[str]:
    """At most `n` prompts of [start, end), evenly spaced in time (every k-th by ts), each cut to
    `max_chars` characters by the database, so a window of long texts never crosses the wire."""
    f = Feedback.__table__.c
    with store.engine.connect() as conn:
        total = int(conn.execute(select(func.count()).where(f.ts >= start, f.ts < end)).scalar_one())
        if total == 0:
            return []
        k = -(-total // n)  # ceil: every k-th event gives at most n
        # Number the ids (index only), keep every k-th, and only then touch the texts.
        rn = func.row_number().over(order_by=(f.ts, f.event_id, f.id_namespace)).label("rn")
        ids = select(f.id_namespace, f.event_id, rn).where(f.ts >= start, f.ts < end).subquery()
        picked = select(ids.c.id_namespace, ids.c.event_id, ids.c.rn).where((ids.c.rn - 1) % k == 0).limit(n).subquery()
        on = (f.id_namespace == picked.c.id_namespace) & (f.event_id == picked.c.event_id)  # the key
        stmt = (
            select(func.substr(f.prompt, 1, max_chars)).join_from(Feedback.__table__, picked, on).order_by(picked.c.rn)
        )
        return [r[0] or "" for r in conn.execute(stmt)]
