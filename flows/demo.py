"""`driftloop demo`: the whole loop on the embedded default, in a few minutes.

1. Start clean (the model cache and Prefect's history are kept), unless resuming.
2. Build the demo base model offline and register it as version 1, alias `champion`.
3. Simulate production: 7 baseline days, then run a cycle (nothing to do);
   then a shifted day in which billing questions appear, and run a cycle
   (regression -> LoRA retrain -> gate -> promotion).

With `feedback="thumbs"` production gives thumbs and star ratings only, never a correction;
users who got a wrong reply sometimes ask for another one and rate it
(`driftloop.demo.world.thumbs_world`). The retrain then learns from preferences (DPO on the
pairs, with replay of earlier training data; KTO where no pair exists) and the gate decides on
the held-out preference suite.

    >>> summaries = run_demo("driftloop.yaml")
    >>> summaries[-1].champion_version
    '2'
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from driftloop.core.config import check_config_files, load_config
from driftloop.core.errors import ConfigError
from driftloop.demo.world import simulate, thumbs_world
from flows.common import _CACHE, StageParams
from flows.loop import CycleSummary, loop

KEEP = {"cache", "prefect"}  # survive a fresh start: the built base model and Prefect's run history
FEEDBACK = ("corrections", "thumbs")  # the demo worlds: with corrections (default), thumbs and ratings only


def _write_jsonl(events: list[dict], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")
    tmp.rename(path)  # atomic: ingestion never sees a half-written file


def run_demo(
    config: str | None = None, fresh: bool = True, seed: int = 0, feedback: str = "corrections"
) -> list[CycleSummary]:
    """Run the two demo cycles on the `feedback` world (corrections or thumbs) and return their summaries."""
    if feedback not in FEEDBACK:
        raise ConfigError(f"demo --feedback {feedback!r}: expected one of {', '.join(FEEDBACK)}")
    cfg = load_config(config, check_files=False)
    check_config_files(cfg, config or "driftloop.yaml", sources=False)  # the demo writes the sources itself
    files = [s for s in cfg.sources if s.kind == "files"]
    if not files:
        raise ConfigError(
            "sources: the demo writes its feedback into the first file source's folder; none is configured"
        )
    feedback_dir = cfg.path(files[0].path).parent
    if fresh and cfg.state_path.exists():
        for child in cfg.state_path.iterdir():
            if child.name not in KEEP:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        _CACHE.clear()
        if feedback_dir.exists() and not feedback_dir.is_relative_to(cfg.state_path):
            for f in feedback_dir.glob("demo-*.jsonl"):
                f.unlink()
    feedback_dir.mkdir(parents=True, exist_ok=True)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=8)
    events = thumbs_world(seed=seed, start=start) if feedback == "thumbs" else simulate(seed=seed, start=start)
    cut = start + timedelta(days=7)
    baseline = [e for e in events if datetime.fromisoformat(e["ts"]) < cut]
    shifted = [e for e in events if datetime.fromisoformat(e["ts"]) >= cut]
    params = StageParams(config=config)
    summaries = []
    _write_jsonl(baseline, feedback_dir / "demo-1-baseline.jsonl")
    summaries.append(loop(params))
    _write_jsonl(shifted, feedback_dir / "demo-2-shifted.jsonl")
    summaries.append(loop(params))
    return summaries
