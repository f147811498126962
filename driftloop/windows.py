"""Monitoring windows: the current window ends at the newest event; the reference
window lies just before it. Pure functions over timestamps.

    >>> w = windows(first, last, WindowConfig(current_days=1, reference_days=7))
    >>> w.current_start == last + EPS - timedelta(days=1)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from driftloop.config import WindowConfig

# The current window is half-open [start, end); nudge its end past the newest event.
EPS = timedelta(microseconds=1)


@dataclass(frozen=True)
class Windows:
    reference_start: datetime
    reference_end: datetime
    current_start: datetime
    current_end: datetime

    def as_dict(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in self.__dict__.items()}


def windows(first: datetime, last: datetime, cfg: WindowConfig) -> Windows:
    """Reference and current windows for events spanning [first, last]."""
    cur_end = last + EPS
    cur_start = cur_end - timedelta(days=cfg.current_days)
    ref_start = max(first, cur_start - timedelta(days=cfg.reference_days))
    return Windows(ref_start, cur_start, cur_start, cur_end)
