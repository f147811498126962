"""One monitor pass over two window frames, and the cache of reference-window results.

`monitor_frames` runs every monitor evaluator on a current window against a reference
(a frame, or the cached `WindowProfile` of one): drift, quality of both windows and
segment gaps of the current one. `ReferenceCache` keeps a reference window's profile
and quality figures on disk under a key built from the window's content fingerprint and
the settings that shape them, so an unchanged reference is read and profiled once.

    >>> out = monitor_frames(reference_frame, current_frame, MonitorConfig(), min_n=30)
    >>> out.drift.summary["columns_drifted"], len(out.bias)
    (['latency_ms'], 1)
    >>> cache = ReferenceCache(Path(".driftloop/monitor/profiles"))
    >>> key = reference_key(window_fingerprint(store, start, end), MonitorConfig(), 30)
    >>> cache.put(key, out.reference_profile, out.reference); cache.get(key) is not None
    True
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from driftloop.config import MonitorConfig
from driftloop.types import MetricResult
from evaluators.drift import DriftOutput, drift_report
from evaluators.profiles import WindowProfile, profile_window
from evaluators.quality import quality_metrics, segment_gaps

CACHE_VERSION = 1  # bump when the profile format or the statistics change


@dataclass
class MonitorOutput:
    """What one monitor pass computed; `seconds` has the wall time of each part."""

    drift: DriftOutput
    current: list[MetricResult]
    reference: list[MetricResult]
    bias: list[MetricResult]
    reference_profile: WindowProfile | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def drift_columns(mon: MonitorConfig) -> list[str]:
    """The columns the drift report compares: the features, then the segment fields."""
    return list(dict.fromkeys(list(mon.features) + list(mon.segment_fields)))


def monitor_frames(
    reference: pd.DataFrame | WindowProfile,
    current: pd.DataFrame,
    mon: MonitorConfig,
    min_n: int = 30,
    reference_quality: list[MetricResult] | None = None,
    confidence: float = 0.95,
) -> MonitorOutput:
    """Drift (current vs reference), quality of both windows and segment gaps of the current one.

    A large reference frame (see `MonitorConfig.exact_rows`) is profiled first and the
    profile returned in `reference_profile`, ready to cache. A `WindowProfile` reference
    needs `reference_quality` (its cached quality figures), since a profile keeps no
    feedback.
    """
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    cols = drift_columns(mon)
    profile = reference if isinstance(reference, WindowProfile) else None
    large = profile is not None or len(reference) + len(current) > mon.exact_rows
    if profile is None and large:
        profile = profile_window(reference, cols, mon.report_rows)
        seconds["profile_reference"] = time.perf_counter() - t0
    if reference_quality is None:
        if isinstance(reference, WindowProfile):
            raise ValueError("monitor_frames: a profiled reference needs its reference_quality")
        t = time.perf_counter()
        reference_quality = quality_metrics(reference, list(mon.segment_fields), min_n, confidence)
        seconds["quality_reference"] = time.perf_counter() - t
    t = time.perf_counter()
    drift = drift_report(profile if large else reference, current, cols, drift_share=mon.drift_share_alert,
                         min_n=min_n, exact_rows=mon.exact_rows, report_rows=mon.report_rows)
    seconds["drift"] = time.perf_counter() - t
    t = time.perf_counter()
    cur_quality = quality_metrics(current, list(mon.segment_fields), min_n, confidence)
    bias = segment_gaps(current, list(mon.segment_fields), min_n=min_n, confidence=confidence)
    seconds["quality_current"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    return MonitorOutput(drift, cur_quality, reference_quality, bias, profile, seconds)


def reference_key(fingerprint: dict[str, Any], mon: MonitorConfig, min_n: int, confidence: float = 0.95) -> str:
    """Cache key of a reference window: its content fingerprint and every setting its results depend on."""
    spec = {"v": CACHE_VERSION, "window": fingerprint, "columns": drift_columns(mon),
            "segments": list(mon.segment_fields), "min_n": min_n, "confidence": confidence,
            "report_rows": mon.report_rows}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode("utf-8")).hexdigest()[:32]


class ReferenceCache:
    """Reference profiles and quality figures on disk: `<dir>/<key>.npz` and `<key>.json`."""

    def __init__(self, directory: Path, keep: int = 20) -> None:
        self.dir = Path(directory)
        self.keep = keep  # newest files kept; a reference window changes at most once per run

    def get(self, key: str) -> tuple[WindowProfile, list[MetricResult]] | None:
        """The cached (profile, reference quality), or None on a miss or an unreadable entry."""
        npz, js = self.dir / f"{key}.npz", self.dir / f"{key}.json"
        if not (npz.exists() and js.exists()):
            return None
        try:
            quality = [MetricResult.model_validate(m) for m in json.loads(js.read_text(encoding="utf-8"))]
            return WindowProfile.load(npz), quality
        except Exception:  # noqa: BLE001 - a damaged entry is a miss, recomputed and overwritten
            return None

    def put(self, key: str, profile: WindowProfile, quality: list[MetricResult]) -> None:
        """Store an entry (profile first, the JSON last, so a half-written entry is a miss) and prune old ones."""
        self.dir.mkdir(parents=True, exist_ok=True)
        profile.save(self.dir / f"{key}.npz")
        tmp = self.dir / f"{key}.json.tmp"
        tmp.write_text(json.dumps([m.model_dump(mode="json") for m in quality]), encoding="utf-8")
        tmp.replace(self.dir / f"{key}.json")
        entries = sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[self.keep:]:
            old.unlink(missing_ok=True)
            old.with_suffix(".npz").unlink(missing_ok=True)
