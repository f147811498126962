"""One monitor pass over two window frames, and the cache of reference-window results.

`monitor_frames` runs the monitor's evaluators from `evaluators.registry` ("drift",
"quality" and "segment_gaps", each configured from the `MonitorConfig`) on a current
window against a reference (a frame, or the cached `WindowProfile` of one): drift,
quality of both windows and segment gaps of the current one. `ReferenceCache` keeps a
reference window's profile and quality figures on disk under a key built from the
window's content fingerprint and the settings that shape them, so an unchanged
reference is read and profiled once.

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
from typing import Any, cast

import pandas as pd

from driftloop.core.config import MonitorConfig
from driftloop.core.types import MetricResult
from evaluators import registry
from evaluators.drift import DriftOutput
from evaluators.drift_spec import DriftSpec
from evaluators.profiles import WindowProfile, profile_window

# The monitor pass: registered evaluators in report order, each with the `seconds` entry its time adds to.
MONITOR_PASS = {"drift": "drift", "quality": "quality_current", "segment_gaps": "quality_current"}
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
    return DriftSpec.from_monitor(mon).columns


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
    evaluators = {name: registry.get(name) for name in MONITOR_PASS}
    specs = {name: ev.configure(mon, min_n, confidence) for name, ev in evaluators.items()}
    drift: DriftSpec = specs["drift"]
    profile = reference if isinstance(reference, WindowProfile) else None
    if profile is None and drift.profiled(len(reference), len(current)):
        profile = profile_window(reference, drift.columns, drift.report_rows)
        seconds["profile_reference"] = time.perf_counter() - t0
    if reference_quality is None:
        if isinstance(reference, WindowProfile):
            raise ValueError("monitor_frames: a profiled reference needs its reference_quality")
        t = time.perf_counter()
        # Quality describes one window: the reference's figures are the same evaluator on the reference.
        reference_quality = evaluators["quality"].run(specs["quality"], registry.Inputs(current=reference)).metrics
        seconds["quality_reference"] = time.perf_counter() - t
    inputs = registry.Inputs(reference=reference if profile is None else profile, current=current)
    outcomes: dict[str, registry.Outcome] = {}
    for name, ev in evaluators.items():
        t = time.perf_counter()
        outcomes[name] = ev.run(specs[name], inputs)
        seconds[MONITOR_PASS[name]] = seconds.get(MONITOR_PASS[name], 0.0) + time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    return MonitorOutput(
        cast(DriftOutput, outcomes["drift"]),
        outcomes["quality"].metrics,
        reference_quality,
        outcomes["segment_gaps"].metrics,
        profile,
        seconds,
    )


def reference_key(fingerprint: dict[str, Any], mon: MonitorConfig, min_n: int, confidence: float = 0.95) -> str:
    """Cache key of a reference window: its content fingerprint and every setting its results depend on."""
    spec = {
        "v": CACHE_VERSION,
        "window": fingerprint,
        "columns": drift_columns(mon),
        "segments": list(mon.segment_fields),
        "min_n": min_n,
        "confidence": confidence,
        "report_rows": mon.report_rows,
    }
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
        except Exception:  # a damaged entry is a miss, recomputed and overwritten
            return None

    def put(self, key: str, profile: WindowProfile, quality: list[MetricResult]) -> None:
        """Store an entry (profile first, the JSON last, so a half-written entry is a miss) and prune old ones."""
        self.dir.mkdir(parents=True, exist_ok=True)
        profile.save(self.dir / f"{key}.npz")
        tmp = self.dir / f"{key}.json.tmp"
        tmp.write_text(json.dumps([m.model_dump(mode="json") for m in quality]), encoding="utf-8")
        tmp.replace(self.dir / f"{key}.json")
        entries = sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[self.keep :]:
            old.unlink(missing_ok=True)
            old.with_suffix(".npz").unlink(missing_ok=True)
