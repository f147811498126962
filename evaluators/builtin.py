"""lm-eval's built-in tasks, found without indexing all of them, read from local files.

lm-eval's default `TaskManager()` parses ~13,900 YAML files (~12 s). A suite needs a
few tasks, so this module finds the one folder under `lm_eval/tasks/` that defines
a task (by folder name, then by a plain-text scan for `task: <name>`), and the
caller indexes only that folder. `local_dataset` rewrites a loaded task config so
that its dataset comes from a local folder instead of the Hugging Face hub; the
task's own prompts, `process_docs`, `process_results` and aggregations are lm-eval's.

    >>> folder = builtin_task_dir("bbq")          # .../lm_eval/tasks/bbq
    >>> cfg = local_dataset(cfg, Path("/data/bbq"), ["Religion.jsonl"], "bbq")
    >>> cfg["dataset_path"], cfg["dataset_kwargs"]["data_files"]
    ('json', {'test': ['/data/bbq/Religion.jsonl']})
"""

from __future__ import annotations

import difflib
import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from driftloop.core.errors import InputError

__all__ = ["builtin_hash", "builtin_task_dir", "builtin_tasks_root", "local_data_files", "local_dataset"]

# datasets' packaged builders by file suffix (json reads JSON Lines too).
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


def builtin_tasks_root() -> Path:
    """The `lm_eval/tasks` folder of the installed lm-eval."""
    import importlib.util

    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.origin:
        raise InputError("lm-eval is not installed")
    return Path(spec.origin).parent / "tasks"


def _defines(folder: Path, name: str) -> bool:
    pat = re.compile(rf"^task:\s*['\"]?{re.escape(name)}['\"]?\s*$", re.M)
    return any(pat.search(y.read_text(encoding="utf-8", errors="replace")) for y in folder.glob("*.yaml"))


@lru_cache(maxsize=64)
def builtin_task_dir(name: str) -> Path:
    """The folder under lm-eval's tasks that defines the task `name` (its YAMLs and helpers).

    Tries `tasks/<prefix>` for each `_`-prefix of the name, longest first (bbq_ambig ->
    bbq), then scans every YAML's text for `task: <name>` (~1 s, no YAML parsing).
    An unknown name is an InputError with the closest built-in folder names.
    """
    root = builtin_tasks_root()
    parts = name.split("_")
    for i in range(len(parts), 0, -1):
        folder = root / "_".join(parts[:i])
        if folder.is_dir() and _defines(folder, name):
            return folder
    needle = re.compile(rf"^task:\s*['\"]?{re.escape(name)}['\"]?\s*$", re.M)
    for y in sorted(root.rglob("*.yaml")):
        if needle.search(y.read_text(encoding="utf-8", errors="replace")):
            return y.parent
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    close = difflib.get_close_matches(name, folders, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise InputError(f"unknown built-in lm-eval task '{name}'{hint}")


def local_data_files(data_dir: Path, patterns: list[str] | None) -> list[Path]:
    """The data files a spec reads from `data_dir`, sorted; InputError when the folder or a file is missing."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"data folder does not exist: {data_dir}")
    if patterns:
        files: list[Path] = []
        for pat in patterns:
            got = sorted(data_dir.glob(pat))
            if not got:
                raise InputError(f"missing data file: no file matches {data_dir / pat}")
            files.extend(got)
    else:
        files = sorted(p for p in data_dir.iterdir() if p.suffix in BUILDERS)
        if not files:
            raise InputError(f"missing data file: {data_dir} has no {'/'.join(BUILDERS)} file")
    kinds = {BUILDERS.get(p.suffix) for p in files}
    if None in kinds or len(kinds) > 1:
        raise InputError(
            f"data files in {data_dir} must share one format ({', '.join(BUILDERS)}): "
            f"{', '.join(p.name for p in files)}"
        )
    return list(dict.fromkeys(files))  # a file matched by two patterns is read once


def local_dataset(
    cfg: dict[str, Any], data_dir: Path, patterns: list[str] | None, task: str, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Point a loaded task config at local files instead of its hub dataset (in place).

    Files named after one of the task's splits (e.g. `test.jsonl`) feed that split;
    otherwise all files feed the task's test split (BBQ's six category files). The
    hub name, config name and revision are dropped; the task keeps its prompts and
    metrics. `cache_dir` is where `datasets` writes its Arrow copy.
    """
    files = local_data_files(data_dir, patterns)
    splits = {cfg[k] for k in SPLIT_KEYS if cfg.get(k)}
    by_stem = {p.stem: p for p in files}
    if splits and splits <= set(by_stem):
        data_files: dict[str, Any] = {s: str(by_stem[s]) for s in sorted(splits)}
    else:
        test = cfg.get("test_split") or cfg.get("validation_split")
        if not test:
            raise InputError(f"task {task}: it declares no test or validation split to read local files into")
        data_files = {test: [str(p) for p in files]}
    cfg["dataset_path"] = BUILDERS[files[0].suffix]
    cfg["dataset_name"] = None
    kwargs = {k: v for k, v in (cfg.get("dataset_kwargs") or {}).items() if k not in ("revision", "trust_remote_code")}
    kwargs["data_files"] = data_files
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    cfg["dataset_kwargs"] = kwargs
    return cfg


def builtin_hash(name: str, data_dir: Path | None, patterns: list[str] | None) -> str:
    """Fingerprint of a built-in task: sha256 of its lm-eval folder (YAMLs and Python helpers)
    and, with `data_dir`, of the local data files (names and bytes).

    Without `data_dir` the hub dataset is not hashed: lm-eval's version, part of the
    cache key, stands for it.
    """
    folder = builtin_task_dir(name)
    h = hashlib.sha256(name.encode())
    for f in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    if data_dir is not None:
        for f in local_data_files(Path(data_dir), patterns):
            h.update(f.name.encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):  # 1 MiB reads
                    h.update(chunk)
    return h.hexdigest()
