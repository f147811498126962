"""Run lm-eval tasks on a local model and return per-item results for paired tests.

Benchmarks are lm-eval YAML tasks, never reimplemented here. This module resolves
`TaskSpec`s against an index built from the given include paths plus, for
`kind="builtin"` specs, the one lm-eval folder that defines each (the ~13,900
built-in YAMLs are not scanned; see `evaluators.builtin`, which also swaps a
built-in task's hub dataset for local files), runs `lm_eval.simple_evaluate` with
the `hf` (or `vllm`) backend, and turns lm-eval's output into `MetricResult`s and
`SampleResults` keyed by each document's stable id.

Data paths: a task's `dataset_kwargs.data_files` may be relative to its YAML
file (lm-eval alone would resolve it against the working directory). Before a
task is built its config is loaded here, relative data files are rewritten to
absolute paths next to the YAML, and the `datasets` cache of such local files goes
to a temporary folder deleted after the run, so nothing is cached on disk
between runs and a rewritten data file can never be served stale.

    >>> out = run_tasks("/models/demo", [TaskSpec(name="driftloop_canary")], [TASKS_DIR])
    >>> out.metrics[0].name, out.metrics[0].value, out.samples[0].items["canary-1640b124c03d"]
    ('driftloop_canary/acc', 1.0, 1.0)
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftloop.core import stats
from driftloop.core.config import TaskSpec
from driftloop.core.errors import InputError, StageError
from driftloop.core.types import MetricResult, SampleResults
from evaluators.builtin import builtin_hash, builtin_task_dir, local_dataset
from evaluators.taskfiles import data_files, find_task_yaml, resolve_data_files, task_hash
from evaluators.tasks import TASKS_DIR

__all__ = ["BenchmarkOutput", "TASKS_DIR", "find_task_yaml", "make_task_manager", "run_tasks", "task_hash"]

log = logging.getLogger(__name__)

SEED = 0  # python, numpy, torch and few-shot seeds: one fixed value, logged in `raw`
BOOTSTRAP_ITERS = 1000  # only for metrics without a closed-form stderr (acc has one)


@dataclass
class BenchmarkOutput:
    """What one `run_tasks` call produced: per-item results, metrics, lm-eval's raw results, wall time."""

    samples: list[SampleResults]
    metrics: list[MetricResult]
    raw: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _quiet() -> None:
    # lm-eval logs every task, seed and request batch at INFO; keep warnings and
    # errors, but respect a level someone set on purpose.
    for name in ("lm_eval", "datasets"):
        lg = logging.getLogger(name)
        if lg.level == logging.NOTSET or lg.level < logging.WARNING:
            lg.setLevel(logging.WARNING)


def make_task_manager(include_paths: list[Path]):
    """An lm-eval `TaskManager` that indexes only `include_paths` (no built-in tasks).

    Indexing the built-in YAMLs takes ~12 s; a few project folders take milliseconds.
    A missing folder is an InputError naming it.
    """
    _quiet()
    from lm_eval.tasks import TaskManager

    paths = [Path(p).resolve() for p in include_paths]
    for p in paths:
        if not p.is_dir():
            raise InputError(f"task folder does not exist: {p}")
    return TaskManager(include_path=[str(p) for p in paths], include_defaults=False)


def _unreadable_yamls(tm, include_paths: list[Path]) -> list[str]:
    """YAML files the index skipped because they do not parse (lm-eval skips them silently)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    indexed = {Path(e.yaml_path).resolve() for e in tm.task_index.values() if e.yaml_path}
    bad = []
    for root in include_paths:
        for y in sorted(Path(root).glob("**/*.yaml")):
            if y.resolve() in indexed:
                continue
            try:
                load_yaml(y, resolve_func=False, recursive=True)
            except Exception as err:  # yaml.YAMLError, OSError, a bad `include:`
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                bad.append(f"{y} ({first})")
    return bad


def _unknown_task(name: str, tm, include_paths: list[Path]) -> InputError:
    close = difflib.get_close_matches(name, tm.all_tasks, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    where = ", ".join(str(p) for p in include_paths) or "(no task folders)"
    bad = _unreadable_yamls(tm, include_paths)
    unread = f"; unreadable task file(s): {'; '.join(bad[:3])}" if bad else ""
    return InputError(f"unknown task '{name}' in {where}{hint}{unread}")


def _task_error(name: str, yaml_path: Path | None, err: Exception) -> InputError:
    where = str(yaml_path) if yaml_path else f"task {name}"
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    m = re.search(r"unexpected keyword argument '([^']+)'", msg)
    if m:
        return InputError(f"{where}: unknown field '{m.group(1)}'")
    if isinstance(err, FileNotFoundError):
        return InputError(f"{where}: dataset_kwargs.data_files: {msg}")
    return InputError(f"{where}: {type(err).__name__}: {msg}")


def _load_tasks(tm, specs: list[TaskSpec], include_paths: list[Path], cache_dir: Path):
    """Build lm-eval Task objects for the specs: {task name: (Task, TaskSpec, task_hash)}."""
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    built: dict[str, tuple[Any, TaskSpec, str]] = {}
    for spec in specs:
        entry = tm.task_index.get(spec.name)
        if entry is None:
            raise _unknown_task(spec.name, tm, include_paths)
        yaml_path = Path(entry.yaml_path) if entry.yaml_path else None
        try:
            if spec.kind == "builtin" and entry.kind is Kind.TASK and yaml_path is not None:
                # lm-eval's own definition; only the dataset source changes.
                cfg = load_yaml(yaml_path, resolve_func=True, recursive=True)
                data_dir = Path(spec.data_dir).expanduser().resolve() if spec.data_dir else None
                if data_dir is not None:
                    local_dataset(cfg, data_dir, spec.data_files, spec.name, cache_dir)
                thash = builtin_hash(spec.name, data_dir, spec.data_files)
                loaded = tm.load([cfg])
            elif entry.kind is Kind.TASK and yaml_path is not None:
                # Loaded here, not by name, so relative data paths can be anchored first.
                cfg = resolve_data_files(load_yaml(yaml_path, resolve_func=True, recursive=True), yaml_path)
                thash = task_hash(yaml_path, cfg)
                if data_files(cfg):  # local files only: hub datasets keep the user's cache
                    cfg["dataset_kwargs"]["cache_dir"] = str(cache_dir)
                loaded = tm.load([cfg])
            else:  # groups, tags, python tasks: lm-eval builds them by name
                thash = task_hash(yaml_path) if yaml_path else ""
                loaded = tm.load([spec.name])
        except InputError:
            raise
        except Exception as err:  # lm-eval raises TypeError/ValueError/KeyError/OSError alike
            raise _task_error(spec.name, yaml_path, err) from None
        for tname, task in loaded["tasks"].items():
            metrics = set(task.higher_is_better())
            if spec.metric not in metrics:
                raise InputError(f"task {tname}: no metric '{spec.metric}' (it has {', '.join(sorted(metrics))})")
            task.set_config(key="num_fewshot", value=spec.num_fewshot)
            built[tname] = (task, spec, thash)
    return built


def _check_model_path(model_path: str | Path) -> str:
    p = Path(model_path).expanduser()
    if not p.exists():
        raise InputError(f"model path does not exist: {p}")
    if p.is_dir() and not (p / "config.json").is_file():
        raise InputError(f"model path has no config.json (not a Hugging Face model folder): {p}")
    # Absolute, so lm-eval's model-info lookup can never mistake it for a hub id.
    return str(p.resolve())


def _load_model(path: str, batch_size: int | str, device: str, backend: str = "hf"):
    from lm_eval.api.registry import get_model

    if backend == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise InputError("benchmark.backend: vllm is not installed (pip install vllm; it needs a GPU)")
        # vLLM places the model on the GPU itself and takes no `device` argument.
        args: dict[str, Any] = {"pretrained": path, "dtype": "auto"}
        extra: dict[str, Any] = {"batch_size": batch_size}
    else:
        # float32 on CPU: half precision is slow there and shifts log-likelihoods.
        args = {"pretrained": path, "dtype": "float32" if device == "cpu" else "auto"}
        extra = {"batch_size": batch_size, "device": device}
    try:
        return get_model(backend).create_from_arg_obj(args, extra)
    except Exception as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StageError(f"model {path} failed to load: {msg}") from None


def _item_id(row: dict[str, Any]) -> str:
    """The doc's own `id`; else its `example_id` (BBQ), prefixed by its `category`
    because BBQ numbers each category file from 0; else its index in the task."""
    doc = row["doc"]
    if isinstance(doc, dict) and "id" in doc:
        return str(doc["id"])
    if isinstance(doc, dict) and "example_id" in doc:
        return f"{doc['category']}-{doc['example_id']}" if "category" in doc else str(doc["example_id"])
    return str(row["doc_id"])


def _sample_results(task: str, rows: list[dict], spec: TaskSpec, model_id: str, thash: str) -> SampleResults:
    items: dict[str, float] = {}
    detail: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["doc_id"]):
        iid = _item_id(row)
        if iid in items:
            raise InputError(f"task {task}: duplicate item id '{iid}' in its data")
        items[iid] = float(row[spec.metric])
        resps = row.get("filtered_resps") or []
        lls = [float(r[0]) if isinstance(r, (list, tuple)) else float(r) for r in resps]
        target = row.get("target")
        detail[iid] = {
            "chosen": max(range(len(lls)), key=lls.__getitem__) if lls else None,
            "label": int(target) if isinstance(target, (int, str)) and str(target).isdigit() else target,
            "loglikelihoods": lls,
        }
    return SampleResults(task=task, model=model_id, metric=spec.metric, items=items, detail=detail, task_hash=thash)


def _interval(value: float, se: float | None, per_item: list[Any]) -> tuple[float | None, float | None, str]:
    """95 % interval and the note that names its method.

    Binary per-item outcomes (accuracy): Wilson score interval, which keeps its
    coverage near 0 and 1 and at small n, where the normal interval from lm-eval's
    stderr collapses (acc = 1.0 gives [1, 1]); lm-eval's stderr is quoted in the note.
    Other metrics with a stderr: value ± 1.96 stderr, clipped to [0, 1] only where every
    per-item value lies there (a mean of such values cannot leave it), and the note says
    so only where the clip changed the interval. A metric that merely happens to lie in
    [0, 1] (a likelihood difference, a bias score) is never clipped. Aggregate-only
    metrics (BBQ bias scores): no interval.
    """
    if per_item and all(isinstance(v, (int, float)) and v in (0, 1) for v in per_item):
        _, lo, hi = stats.wilson(int(sum(per_item)), len(per_item))
        quoted = f"; lm-eval stderr {se:.4f}" if se is not None else ""
        return lo, hi, f"95% CI: Wilson score{quoted}"
    if se is None:
        return None, None, "no stderr from lm-eval (aggregate-only metric)"
    lo, hi = value - 1.96 * se, value + 1.96 * se  # 1.96 = z for 95 %
    note = f"95% CI: normal, value ± 1.96 lm-eval stderr ({se:.4f})"
    bounded = bool(per_item) and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in per_item)
    if bounded and (lo < 0.0 or hi > 1.0):
        lo, hi = max(0.0, lo), min(1.0, hi)
        note += ", clipped to [0,1] (every item's value lies there)"
    return lo, hi, note


def _metric_results(
    res: dict[str, Any], tasks: list[str], logged: dict[str, list[dict]] | None = None
) -> list[MetricResult]:
    out: list[MetricResult] = []
    logged = logged or {}
    for t in tasks:
        row = res["results"].get(t, {})
        hib = res.get("higher_is_better", {}).get(t, {})
        n = int(res.get("n-samples", {}).get(t, {}).get("effective", 0))
        for key, value in row.items():
            metric, _, flt = key.partition(",")
            if not flt or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            if math.isnan(value):  # e.g. BBQ's bias score of a category not in the data
                continue
            se = row.get(f"{metric}_stderr,{flt}")
            se = float(se) if isinstance(se, (int, float)) and not math.isnan(se) else None
            name = f"{t}/{metric}" if flt == "none" else f"{t}/{metric}[{flt}]"
            per_item = [r.get(metric) for r in logged.get(t, [])] if flt == "none" else []
            lo, hi, note = _interval(float(value), se, per_item)
            out.append(
                MetricResult(
                    name=name,
                    value=float(value),
                    n=n,
                    source="benchmark",
                    direction="higher" if hib.get(metric, True) else "lower",
                    ci_low=lo,
                    ci_high=hi,
                    note=note,
                )
            )
    return out


@contextlib.contextmanager
def _no_dataset_bars():
    import datasets

    was = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def _evaluate(simple_evaluate, lm, tm, built, samples, batch_size, device):
    """One `simple_evaluate` call: fixed seeds, no request or response cache, samples logged."""
    return simple_evaluate(
        model=lm,
        tasks=[task for task, _, _ in built.values()],
        task_manager=tm,
        samples=samples or None,
        num_fewshot=None,  # set per task in _load_tasks
        batch_size=batch_size,
        device=device,
        use_cache=None,
        cache_requests=False,
        log_samples=True,
        bootstrap_iters=BOOTSTRAP_ITERS,
        random_seed=SEED,
        numpy_random_seed=SEED,
        torch_random_seed=SEED,
        fewshot_random_seed=SEED,
    )


def run_tasks(
    model_path: str | Path,
    tasks: list[TaskSpec],
    include_paths: list[Path],
    batch_size: int | str = 16,
    device: str = "cpu",
    model_id: str = "",
    backend: str = "hf",
) -> BenchmarkOutput:
    """Evaluate the model folder `model_path` on `tasks` with lm-eval's `backend` (hf or vllm).

    Project and golden tasks resolve in `include_paths` only; a `kind="builtin"` task
    resolves in its own lm-eval folder, reading `data_dir` instead of the hub when set.
    Each TaskSpec's `limit` (first N documents) and `num_fewshot` apply to that task
    alone. Seeds are fixed and nothing is cached between runs. Returns one
    `SampleResults` per leaf task (keyed by each document's stable id; the metric of
    record is `TaskSpec.metric`), one `MetricResult` per task metric named
    `<task>/<metric>` (its 95 % interval method in `note`), lm-eval's results without
    the samples, and the wall time. Bad input (unknown task, missing model folder or
    data file, a YAML with a bad field) raises InputError before the model is loaded.
    """
    t0 = time.monotonic()
    if not tasks:
        raise InputError("no benchmark tasks given")
    path = _check_model_path(model_path)
    if device == "auto":  # a GPU when there is one: the hf backend on CPU or GPU, vllm on GPU
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    include_paths = [Path(p) for p in include_paths]
    # Built-in tasks: index just their lm-eval folder, never the ~13,900 default YAMLs.
    builtin = [builtin_task_dir(t.name) for t in tasks if t.kind == "builtin"]
    tm = make_task_manager(list(dict.fromkeys(include_paths + builtin)))
    from lm_eval import simple_evaluate
    from lm_eval.utils import handle_non_serializable

    with tempfile.TemporaryDirectory(prefix="driftloop-lmeval-") as tmp, _no_dataset_bars():
        built = _load_tasks(tm, tasks, include_paths, Path(tmp))
        # Per-task limits go through `samples` (explicit doc indices): lm-eval's own
        # `limit` would apply one number to every task.
        samples = {
            name: list(range(min(spec.limit, len(task.eval_docs))))
            for name, (task, spec, _) in built.items()
            if spec.limit
        }
        lm = _load_model(path, batch_size, device, backend)
        try:
            res = _evaluate(simple_evaluate, lm, tm, built, samples, batch_size, device)
        except Exception as err:
            msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise StageError(f"lm-eval run on {path} failed: {type(err).__name__}: {msg}") from err
    if res is None:  # only non-zero ranks get None; we run one process
        raise StageError("lm-eval returned no results")
    logged = res.pop("samples", {}) or {}
    mid = model_id or path
    sample_results = [
        _sample_results(name, logged.get(name, []), spec, mid, thash) for name, (_, spec, thash) in built.items()
    ]
    raw = json.loads(json.dumps(res, default=handle_non_serializable))
    seconds = time.monotonic() - t0
    log.info(
        "lm-eval: %d task(s), %d items on %s in %.1f s",
        len(built),
        sum(len(s.items) for s in sample_results),
        mid,
        seconds,
    )
    metrics = _metric_results(res, list(built), logged)
    return BenchmarkOutput(samples=sample_results, metrics=metrics, raw=raw, seconds=seconds)
