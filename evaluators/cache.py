"""Benchmark result cache: per-item results keyed by what determines them.

A task's results depend on the model weights, the task definition and data, the
lm-eval version, few-shot, limit, metric of record and seed. `cache_key` hashes
exactly those; `evaluate_cached` looks every task up first and runs lm-eval
(loading the model) only for the misses, so an unchanged model on an unchanged
task is answered from the store without touching the model. The store keeps the
per-item rows (`Store.save_samples`) under the key, and the task's aggregates
(e.g. BBQ's bias scores, which per-item rows cannot rebuild without lm-eval) under
`<key>:agg`, one pseudo-item per metric.

    >>> fp = model_fingerprint("/models/demo")
    >>> plan = [("canary", TaskSpec(name="driftloop_canary"))]
    >>> results, ran = evaluate_cached(store, "/models/demo", fp, plan, [TASKS_DIR], model_id="v3")
    >>> results[0].cached, results[0].metrics[0].name
    (False, 'driftloop_canary/acc')
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any, Protocol

from driftloop.core.config import TaskSpec
from driftloop.core.errors import InputError
from driftloop.core.types import MetricResult, SampleResults
from evaluators.benchmark import SEED, BenchmarkOutput, find_task_yaml, run_tasks, task_hash
from evaluators.builtin import builtin_hash, builtin_task_dir

__all__ = ["CachedTask", "cache_key", "evaluate_cached", "load_cached", "model_fingerprint", "save_cached", "spec_hash"]

AGG_SUFFIX = ":agg"  # aggregates live beside the per-item rows, under key + this suffix
WEIGHT_SUFFIXES = {".safetensors", ".bin", ".json", ".model", ".txt"}  # weights, config, tokenizer


class SampleStore(Protocol):
    def save_samples(
        self,
        cache_key: str,
        task: str,
        model: str,
        metric: str,
        items: dict[str, float],
        detail: dict[str, dict[str, Any]],
    ) -> None: ...
    def load_samples(self, cache_key: str) -> dict[str, Any] | None: ...


@dataclass
class CachedTask:
    """One planned task's outcome: its suite, spec, per-item results, aggregates, and whether it was a hit."""

    suite: str
    spec: TaskSpec
    key: str
    samples: SampleResults
    metrics: list[MetricResult] = field(default_factory=list)
    cached: bool = False


def model_fingerprint(path: str | Path, label: str = "", source: str = "") -> str:
    """Registry versions (`source` given): sha256 of version label and artifact source, no
    file read; local folders: sha256 of the weight, config and tokenizer files (names and bytes)."""
    if source:
        return hashlib.sha256(f"{label}\x00{source}".encode()).hexdigest()
    root = Path(path)
    if not root.exists():
        raise InputError(f"model path does not exist: {root}")
    h = hashlib.sha256()
    files = (
        [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES)
    )
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() if f != root else f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):  # 1 MiB reads
                h.update(chunk)
    return h.hexdigest()


def spec_hash(spec: TaskSpec, include_paths: list[Path]) -> str:
    """The task-config hash of a spec, without building lm-eval's TaskManager: built-in tasks
    hash their lm-eval folder and local data; project and golden tasks their YAML and data
    (the golden YAML carries its own `metadata.task_hash`). InputError if the task is not found."""
    if spec.kind == "builtin":
        return builtin_hash(
            spec.name, Path(spec.data_dir).expanduser().resolve() if spec.data_dir else None, spec.data_files
        )
    y = find_task_yaml(spec.name, include_paths)
    if y is None:
        raise _unknown(spec.name, include_paths)
    return task_hash(y)


def _unknown(name: str, include_paths: list[Path]) -> InputError:
    """Unknown project task: the closest names declared in the folders, or a hint to use kind: builtin."""
    names = set()
    for root in include_paths:
        for y in Path(root).glob("**/*.yaml"):
            names.update(re.findall(r"^task:\s*['\"]?([\w.-]+)", y.read_text(encoding="utf-8", errors="replace"), re.M))
    close = difflib.get_close_matches(name, sorted(names), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    if not close:
        try:
            builtin_task_dir(name)
            hint = "; it is a built-in lm-eval task: set kind: builtin"
        except InputError:
            pass
    return InputError(f"unknown task '{name}' in {', '.join(str(p) for p in include_paths)}{hint}")


def cache_key(
    fingerprint: str, thash: str, spec: TaskSpec, lm_eval_version: str | None = None, seed: int = SEED
) -> str:
    """sha256 over model fingerprint, task hash, lm-eval version, few-shot, limit, metric and seed."""
    parts = [
        fingerprint,
        thash,
        lm_eval_version or pkg_version("lm-eval"),
        str(spec.num_fewshot),
        str(spec.limit),
        spec.metric,
        str(seed),
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def save_cached(store: SampleStore, key: str, samples: SampleResults, metrics: list[MetricResult]) -> None:
    """Store one task's per-item results and its aggregates under `key`."""
    store.save_samples(key, samples.task, samples.model, samples.metric, samples.items, samples.detail)
    store.save_samples(
        key + AGG_SUFFIX,
        samples.task,
        samples.model,
        samples.metric,
        {m.name: float(m.value) for m in metrics if m.value is not None},
        {m.name: m.model_dump(mode="json") for m in metrics if m.value is not None},
    )


def load_cached(store: SampleStore, key: str, task_hash_: str = "") -> tuple[SampleResults, list[MetricResult]] | None:
    """The results stored under `key`, aggregates marked `note="cached"`; None on a miss."""
    hit = store.load_samples(key)
    if not hit:
        return None
    samples = SampleResults(
        task=hit["task"],
        model=hit["model"],
        metric=hit["metric"],
        items=hit["items"],
        detail=hit["detail"],
        task_hash=task_hash_,
    )
    agg = store.load_samples(key + AGG_SUFFIX) or {"detail": {}}
    metrics = [MetricResult(**{**d, "note": "cached"}) for d in agg["detail"].values()]
    # The metric of record first, as lm-eval reports it.
    metrics.sort(key=lambda m: (m.name != f"{samples.task}/{samples.metric}", m.name))
    return samples, metrics


def evaluate_cached(
    store: SampleStore,
    model_path: str | Path,
    fingerprint: str,
    plan: list[tuple[str, TaskSpec]],
    include_paths: list[Path],
    model_id: str = "",
    **run_kwargs: Any,
) -> tuple[list[CachedTask], BenchmarkOutput | None]:
    """Answer each (suite, spec) in `plan` from the cache, and run lm-eval once for the misses.

    Hashing tasks and reading the store needs neither the model nor a TaskManager; only
    when something misses is `run_tasks(model_path, misses, include_paths, **run_kwargs)`
    called, and its results are stored before they are returned. Returns the outcomes in
    plan order and the lm-eval output (None when everything hit).
    """
    keyed = []
    for suite, spec in plan:
        th = spec_hash(spec, include_paths)
        keyed.append((suite, spec, th, cache_key(fingerprint, th, spec)))
    out: list[CachedTask | None] = []
    todo: dict[str, tuple[TaskSpec, str, str]] = {}
    for suite, spec, th, key in keyed:
        hit = load_cached(store, key, th)
        if hit is not None:
            # Same weights under another name (a path, then its registry version): report this name.
            samples = hit[0].model_copy(update={"model": model_id}) if model_id else hit[0]
            out.append(CachedTask(suite, spec, key, samples, hit[1], cached=True))
        else:
            out.append(None)
            todo.setdefault(spec.name, (spec, th, key))  # a task in two suites runs once
    ran = None
    if todo:
        ran = run_tasks(
            model_path, [spec for spec, _, _ in todo.values()], include_paths, model_id=model_id, **run_kwargs
        )
        by_task = {s.task: s for s in ran.samples}
        for name, (_, _, key) in todo.items():
            if name not in by_task:  # a group or tag expands to other leaf names: not cacheable as one
                raise InputError(f"task {name}: expands to {', '.join(sorted(by_task))}; list leaf tasks in suites")
            mine = [m for m in ran.metrics if m.name.split("/", 1)[0] == name]
            save_cached(store, key, by_task[name], mine)
        for i, (suite, spec, _, key) in enumerate(keyed):
            if out[i] is None:
                mine = [m for m in ran.metrics if m.name.split("/", 1)[0] == spec.name]
                out[i] = CachedTask(suite, spec, key, by_task[spec.name], mine, cached=False)
    return [with_spec(o) for o in out if o is not None], ran


def with_spec(task: CachedTask) -> CachedTask:
    """The task's results with the config's say on its metric of record applied after the cache.

    The direction comes from the TaskSpec where it gives one, else from the direction lm-eval
    declared (`higher_is_better`, carried by the cached aggregate); a target replaces it. Applied
    after the cache, so editing a task's direction, target or margin never needs a re-run.
    """
    name = f"{task.samples.task}/{task.samples.metric}"
    declared = next((m.direction for m in task.metrics if m.name == name), "higher")
    spec = task.spec.metric_spec(declared)
    metrics = [
        m.model_copy(update={"direction": spec.direction, "target": spec.target}) if m.name == name else m
        for m in task.metrics
    ]
    return CachedTask(
        task.suite, task.spec, task.key, task.samples.model_copy(update={"spec": spec}), metrics, cached=task.cached
    )
