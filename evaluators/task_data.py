"""The data a benchmark plan reads, as rows with a digest: the golden and canary sets and any
other task whose YAML names local data files (for MLflow's dataset inputs).

    >>> [(d.task, d.path, len(d.rows)) for d in task_data(plan, include_paths)]
    [('driftloop_golden', '.../driftloop_golden.jsonl', 40), ('driftloop_canary', '.../canary.jsonl', 60)]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from driftloop.core.config_eval import TaskSpec
from evaluators.taskfiles import data_files, find_task_yaml, resolve_data_files, task_hash

MAX_ROWS = 200_000  # a larger file is named and hashed, its rows not loaded (the UI needs the schema)


@dataclass(frozen=True)
class TaskData:
    suite: str
    task: str
    path: str  # the first data file (where a task reads several, the rest share its dataset)
    rows: list[dict[str, Any]]
    digest: str  # the task's own hash (YAML and data), as the benchmark cache keys it


def _rows(files: list[Path]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in files:
        if f.suffix not in (".jsonl", ".json") or f.stat().st_size > 200 * 1024 * 1024:
            continue
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip() and len(out) < MAX_ROWS:
                row = json.loads(line)
                # Nested values become JSON text: a flat schema, whatever the task's fields hold.
                out.append({k: v if isinstance(v, str | int | float | bool) else json.dumps(v) for k, v in row.items()})
    return out


def task_data(plan: list[tuple[str, TaskSpec]], include_paths: list[Path]) -> list[TaskData]:
    """One entry per task of `plan` (first suite wins) whose YAML is found and reads local files;
    built-in hub tasks are skipped (their data is lm-eval's)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    seen: set[str] = set()
    out = []
    for suite, spec in plan:
        if spec.name in seen or spec.kind == "builtin":
            continue
        seen.add(spec.name)
        yaml_path = find_task_yaml(spec.name, include_paths)
        if yaml_path is None:
            continue
        cfg = resolve_data_files(load_yaml(str(yaml_path), resolve_func=False, recursive=True), yaml_path)
        files = [Path(f) for f in data_files(cfg) if Path(f).is_file()]
        if not files:
            continue
        out.append(TaskData(suite, spec.name, str(files[0]), _rows(files), task_hash(yaml_path, cfg)))
    return out
