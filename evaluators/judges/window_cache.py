"""Judged windows on disk, so an unchanged reference window is neither read nor judged again.

A monitor pass judges the reference window as well as the current one. The reference
often stays the same from pass to pass (a champion's promotion window, or a long window
that the monitor serves from its profile cache); judging it again would read every
event and its texts only to find every verdict in the verdict cache. `JudgedWindowCache`
keeps what judging the window produced (each judge's calibration and the window's PPI++
estimates and findings) as one JSON file per key; the key is built by the caller from the
window's content fingerprint and everything that shapes the result (the judges' specs,
model fingerprints and rubrics, the segment fields).

    >>> cache = JudgedWindowCache(Path(".driftloop/judges/windows"))
    >>> cache.put(key, calibrations, window); cache.get(key)[1].findings[0].kind
    'judge_trusted'
"""

from __future__ import annotations

import json
from pathlib import Path

from driftloop.core.judging import JudgeCalibration, JudgedWindow

VERSION = 1  # bump when the stored form or the figures' computation changes


class JudgedWindowCache:
    """(calibrations, judged window) by key: `<dir>/<key>.json`; the newest `keep` files are kept."""

    def __init__(self, directory: Path, keep: int = 20) -> None:
        self.dir = Path(directory)
        self.keep = keep

    def get(self, key: str) -> tuple[list[JudgeCalibration], JudgedWindow] | None:
        """The stored result, or None on a miss or an unreadable file (then judged again and overwritten)."""
        path = self.dir / f"{key}.json"
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != VERSION:
                return None
            cals = [JudgeCalibration.model_validate(c) for c in data["calibrations"]]
            return cals, JudgedWindow.model_validate(data["window"])
        except (ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, calibrations: list[JudgeCalibration], window: JudgedWindow) -> None:
        """Store a result (written to a temporary file, then renamed) and prune the oldest files."""
        self.dir.mkdir(parents=True, exist_ok=True)
        data = {
            "version": VERSION,
            "calibrations": [c.model_dump(mode="json") for c in calibrations],
            "window": window.model_dump(mode="json"),
        }
        tmp = self.dir / f"{key}.json.tmp"
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(self.dir / f"{key}.json")
        entries = sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[self.keep :]:
            old.unlink(missing_ok=True)
