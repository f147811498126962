"""SIGKILL at random moments during ingestion: the rerun leaves exactly the input's unique valid events."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

from driftloop.ingest import ingest_files
from driftloop.store import Store

ROWS = 20_000
BATCH = 100  # rows per transaction: many commit points to be killed between
CHILD = f"""
import sys
from pathlib import Path
from driftloop.ingest import ingest_files
from driftloop.store import Store
print("ready", flush=True)
ingest_files(Store(sys.argv[1]), [Path(p) for p in sys.argv[2:]], batch_lines=int({BATCH}))
"""


def corpus(folder: Path) -> tuple[list[Path], set[str], int]:
    """Two files (JSONL and gzip-free CSV) with duplicates and bad rows; returns (files, unique ids, bad rows)."""
    rng = random.Random(7)
    ids, bad, lines = set(), 0, []
    for i in range(ROWS):
        r = rng.random()
        if r < 0.05:
            lines.append('{"ts": "2026-11-01T10:00:00Z", "prompt": ')  # malformed
            bad += 1
            continue
        eid = f"e{rng.randrange(ROWS * 3 // 4)}"  # about a fifth are duplicates
        ids.add(eid)
        lines.append(
            json.dumps(
                {
                    "event_id": eid,
                    "ts": "2026-11-01T10:00:00+00:00",
                    "prompt": f"prompt {eid} mail me at u{i}@example.com",
                    "rating": 1 + i % 5,
                }
            )
        )
    a = folder / "a.jsonl"
    a.write_text("\n".join(lines[: ROWS // 2]) + "\n")
    b = folder / "b.csv"
    rows = ["event_id,ts,prompt,rating"]
    for line in lines[ROWS // 2 :]:
        try:
            d = json.loads(line)
        except ValueError:
            rows.append("x,2026-11-01T10:00:00+00:00")  # ragged
            continue
        rows.append(f'{d["event_id"]},{d["ts"]},"{d["prompt"]}",{d["rating"]}')
    b.write_text("\n".join(rows) + "\n")
    return [a, b], ids, bad


def test_sigkill_mid_ingest_then_rerun_loses_and_duplicates_nothing(store_url, tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    files, unique, bad = corpus(data)
    store = Store(store_url)
    store.migrate()
    rng = random.Random(11)
    kills, counts = 0, [0]
    for _ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, store_url, *map(str, files)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert child.stdout.readline().strip() == b"ready"
        # Kill once this run has committed something new, after a random extra moment:
        # the kill lands between or inside transactions, never before the run started.
        while child.poll() is None and store.count_events() == counts[-1]:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            kills += 1
        child.wait()
        counts.append(store.count_events())
    assert kills >= 2, "the child finished before it could be killed: make the input larger"
    assert counts == sorted(counts) and any(0 < n < len(unique) for n in counts)  # killed mid-run
    r = ingest_files(store, files, batch_lines=BATCH)
    assert r.balanced
    with store.engine.connect() as c:
        stored = {x for (x,) in c.execute(text("SELECT event_id FROM feedback"))}
        texts = " ".join(p for (p,) in c.execute(text("SELECT prompt FROM feedback")))
    assert stored == unique and store.count_events() == len(unique)
    # Quarantine rows are exactly-once by content: the corpus repeats one malformed JSONL line and one
    # ragged CSV row, so each kind is stored once however often it occurs and however often a run restarts.
    assert bad > 2 and store.count_quarantine() == 2
    assert "@example.com" not in texts
    assert ingest_files(store, files).read == 0
    store.close()
