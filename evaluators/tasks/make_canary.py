"""Regenerate `canary.jsonl`, the frozen data of the `driftloop_canary` task.

The canary is a multiple-choice check of the demo world's base topics
(`driftloop.demo.world.canary_items`); it guards against catastrophic
forgetting, so it must not change by accident. The file is committed; rerun
this only when the demo world itself changes, and review the diff.

    $ python -m evaluators.tasks.make_canary          # rewrites evaluators/tasks/canary.jsonl
    >>> write_canary(Path("/tmp/x"))                   # PosixPath('/tmp/x/canary.jsonl')
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from driftloop.demo import world
from evaluators.tasks import TASKS_DIR

CANARY_FILE = "canary.jsonl"


def canary_jsonl() -> str:
    """The canary items as JSONL text (one item per line, keys sorted, so the bytes are stable)."""
    return "".join(json.dumps(item, sort_keys=True) + "\n" for item in world.canary_items())


def write_canary(out_dir: Path = TASKS_DIR) -> Path:
    """Write `canary.jsonl` into `out_dir` (the shipped tasks folder by default); returns its path."""
    path = Path(out_dir) / CANARY_FILE
    path.write_text(canary_jsonl(), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write_canary(Path(sys.argv[1]) if len(sys.argv) > 1 else TASKS_DIR))
