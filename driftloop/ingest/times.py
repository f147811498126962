"""Timestamps as exports write them: epoch numbers of any unit, and local times of a named zone.

`rows.parse_row` reads ISO-8601 with an offset; this module adds epoch
seconds, milliseconds, microseconds and nanoseconds (the unit told by the
size: 1e11 seconds would be the year 5138) and the zone of times written
without an offset (`FieldMapping.timezone`).

    >>> epoch_time(1764583200), epoch_time("1764583200000")
    (datetime.datetime(2025, 12, 1, 10, 0, tzinfo=datetime.timezone.utc), datetime.datetime(2025, 12, 1, 10, 0, tzinfo=datetime.timezone.utc))
    >>> zone("Europe/Berlin")
    zoneinfo.ZoneInfo(key='Europe/Berlin')
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, tzinfo
from functools import cache
from typing import Any

# Epoch text: 9 digits or more (an 8-digit string is an ISO basic date, 20261101).
EPOCH = re.compile(r"-?\d{9,19}(?:\.\d{1,9})?")
_UNITS = ((1e11, 1), (1e14, 10**3), (1e17, 10**6), (math.inf, 10**9))  # |x| below -> divisor to seconds
_ORIGIN = datetime(1970, 1, 1, tzinfo=UTC)


def is_epoch(v: Any) -> bool:
    """True for a number (not a bool) or a string that `epoch_time` reads."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return True
    return isinstance(v, str) and EPOCH.fullmatch(v.strip()) is not None


def epoch_time(v: Any) -> datetime:
    """An epoch number (or its text) as a UTC time; raises ValueError with a short problem."""
    x: Any = v
    if isinstance(v, str):
        s = v.strip()
        x = float(s) if "." in s else int(s)
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError("not a finite epoch number")
    unit = next(u for limit, u in _UNITS if abs(x) < limit)
    try:
        if isinstance(x, int):  # exact: no float rounding of milliseconds
            return _ORIGIN + timedelta(microseconds=x * 10**6 // unit)
        return _ORIGIN + timedelta(seconds=x / unit)
    except OverflowError:
        raise ValueError("out of range") from None


@cache
def zone(name: str) -> tzinfo:
    """The IANA time zone `name` (ZoneInfoNotFoundError, a KeyError, when there is none)."""
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)
