"""Task files: find a project task's YAML by name, anchor its local data files, hash it.

Used before lm-eval is involved (the cache key needs a task's hash without a
TaskManager) and by `evaluators.benchmark` when it loads a task.

    >>> y = find_task_yaml("driftloop_canary", [TASKS_DIR])
    >>> y.name, len(task_hash(y))
    ('driftloop_canary.yaml', 64)
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

__all__ = ["data_files", "find_task_yaml", "resolve_data_files", "task_hash"]


def task_hash(yaml_path: Path, cfg: dict[str, Any] | None = None) -> str:
    """Fingerprint of a task: `metadata.task_hash` where the YAML declares one, else
    sha256 of the YAML bytes and of every local data file it reads (sorted by name)."""
    if cfg is None:
        from lm_eval.tasks._yaml_loader import load_yaml

        cfg = resolve_data_files(load_yaml(yaml_path, resolve_func=False, recursive=True), yaml_path)
    meta = cfg.get("metadata")
    if isinstance(meta, dict) and meta.get("task_hash"):
        return str(meta["task_hash"])
    base = Path(yaml_path).resolve().parent
    h = hashlib.sha256(Path(yaml_path).read_bytes())
    for f in sorted(data_files(cfg)):
        p = Path(f)
        if p.is_file():
            # Names relative to the YAML, so a copied task folder keeps its hash.
            h.update((p.relative_to(base).as_posix() if p.is_relative_to(base) else p.name).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def find_task_yaml(name: str, include_paths: list[Path]) -> Path | None:
    """The YAML in `include_paths` that declares `task: <name>`, by a text scan (no TaskManager, ~1 ms)."""
    pat = re.compile(rf"^task:\s*['\"]?{re.escape(name)}['\"]?\s*$", re.M)
    for root in include_paths:
        for y in sorted(Path(root).glob("**/*.yaml")):
            if pat.search(y.read_text(encoding="utf-8", errors="replace")):
                return y
    return None


def data_files(cfg: dict[str, Any]) -> list[str]:
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if isinstance(files, str):
        return [files]
    if isinstance(files, list):
        return [str(f) for f in files]
    if isinstance(files, dict):
        out: list[str] = []
        for v in files.values():
            out.extend([v] if isinstance(v, str) else [str(x) for x in v])
        return out
    return []


def resolve_data_files(cfg: dict[str, Any], yaml_path: Path) -> dict[str, Any]:
    """Rewrite relative `dataset_kwargs.data_files` against the YAML's folder (in place)."""
    kwargs = cfg.get("dataset_kwargs")
    if not isinstance(kwargs, dict) or "data_files" not in kwargs:
        return cfg
    base = Path(yaml_path).resolve().parent

    def fix(f: str) -> str:
        # Globs and URLs pass through; only plain relative paths are anchored.
        return f if "://" in f or Path(f).is_absolute() else str(base / f)

    files = kwargs["data_files"]
    if isinstance(files, str):
        kwargs["data_files"] = fix(files)
    elif isinstance(files, list):
        kwargs["data_files"] = [fix(str(f)) for f in files]
    elif isinstance(files, dict):
        kwargs["data_files"] = {k: fix(v) if isinstance(v, str) else [fix(str(x)) for x in v] for k, v in files.items()}
    return cfg
