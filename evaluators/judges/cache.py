"""Judge verdicts on disk: one SQLite file, keyed by (judge fingerprint, rubric hash, item hash).

A verdict is computed once per judge model, rubric and event content: a window judged
again (the next monitor pass overlaps the last) costs no backend call for the events it
already judged. Changing the model, the endpoint's model name, the rubric or a verdict
word changes the key, so stale verdicts are never served.

    >>> cache = JudgeCache(Path(".driftloop/judges/cache.db"))
    >>> cache.put("hf:3f0c..", "9a1d..", {"e3b0..": 0.91}); cache.get("hf:3f0c..", "9a1d..", ["e3b0.."])
    {'e3b0..': 0.91}
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

_SCHEMA = """CREATE TABLE IF NOT EXISTS verdicts (
    judge TEXT NOT NULL, rubric TEXT NOT NULL, item TEXT NOT NULL, score REAL NOT NULL,
    PRIMARY KEY (judge, rubric, item))"""
_CHUNK = 500  # item hashes per SELECT (SQLite's bound-parameter limit is 999 on old builds)


class JudgeCache:
    """Scores in [0, 1] by (judge fingerprint, rubric hash, item hash); safe across processes (SQLite locks)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get(self, judge: str, rubric: str, items: list[str]) -> dict[str, float]:
        """The cached scores of those `items` that have one."""
        out: dict[str, float] = {}
        with self._connect() as conn:
            for i in range(0, len(items), _CHUNK):
                chunk = items[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT item, score FROM verdicts WHERE judge = ? AND rubric = ? AND item IN ({marks})",
                    [judge, rubric, *chunk],
                )
                out.update(dict(rows.fetchall()))
        return out

    def put(self, judge: str, rubric: str, scores: dict[str, float]) -> None:
        with self._connect() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO verdicts (judge, rubric, item, score) VALUES (?, ?, ?, ?)",
                [(judge, rubric, item, float(s)) for item, s in scores.items()],
            )
