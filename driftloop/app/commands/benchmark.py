"""`driftloop benchmark`: run benchmark suites on a model and print a table, or list the suites.

    $ driftloop benchmark --list                              # suites, their tasks and data folders
    $ driftloop benchmark --suite bias --model champion       # registry alias
    $ driftloop benchmark --suite canary --model 3 --batch-size auto
    $ driftloop benchmark --suite canary --model ./models/demo    # a local folder

Cached results (unchanged model and task) are marked in the last column. Without a Prefect
API, a run that would evaluate nothing (a local model folder, no golden task, every task
cached) is answered from the cache alone, in a second or two, and logs no new MLflow run.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

from rich.console import Console
from rich.table import Table

from driftloop.app.commands import config

console = Console()


def _batch_size(v: str) -> int | str:
    if v == "auto":
        return v
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch size must be a positive integer or 'auto', got {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"batch size must be a positive integer or 'auto', got {v!r}")
    return n


def add_commands(sub) -> None:
    p = sub.add_parser("benchmark", help="run benchmark suites on a model, or list them")
    p.add_argument("--model", default="champion", help="champion, challenger, a version number, or a local path")
    p.add_argument("--suite", action="append", default=None, help="suite name (repeatable; default: all)")
    p.add_argument("--list", action="store_true", help="list the configured suites and tasks")
    p.add_argument(
        "--batch-size",
        type=_batch_size,
        default=None,
        help="lm-eval batch size or 'auto' (default: benchmark.batch_size)",
    )
    p.add_argument(
        "--backend",
        choices=["hf", "vllm"],
        default=None,
        help="lm-eval backend (default: benchmark.backend); vllm needs a GPU and the vllm package",
    )
    p.set_defaults(handler=benchmark)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def suites_table(cfg) -> Table:
    """The configured suites, one row per task."""
    t = Table(title="benchmark suites")
    for c in ("suite", "role", "task", "kind", "limit", "fewshot", "metric", "data"):
        t.add_column(c)
    for name, s in cfg.benchmark.suites.items():
        for task in s.tasks:
            data = str(cfg.path(task.data_dir)) if task.data_dir else ("hub" if task.kind == "builtin" else "")
            if task.data_files:
                data += " [" + ", ".join(task.data_files) + "]"
            t.add_row(
                name,
                s.role,
                task.name,
                task.kind,
                "-" if task.limit is None else str(task.limit),
                str(task.num_fewshot),
                task.metric,
                data,
            )
    return t


def results_table(res) -> Table:
    """One row per metric of every suite: value with its 95 % interval, n, and the interval method or `cached`."""
    t = Table(title=f"benchmark: model {res.model}")
    for c in ("suite", "metric", "value", "95% CI", "n", "note"):
        t.add_column(c)
    for suite, metrics in res.metrics.items():
        for m in metrics:
            ci = "-" if m.ci_low is None else f"[{_fmt(m.ci_low)}, {_fmt(m.ci_high)}]"
            better = (
                f" (target {m.target:g})"
                if m.target is not None
                else ""
                if m.direction == "higher"
                else " (lower is better)"
            )
            t.add_row(suite, m.name + better, _fmt(m.value), ci, str(m.n), m.note)
    return t


def benchmark(args: argparse.Namespace) -> int:
    cfg = config(args)
    if args.list:
        console.print(suites_table(cfg))
        return 0
    from flows.common import prefect_api_url, run_flow, use_engine

    if prefect_api_url() is None:
        cached = from_cache(cfg, args.model, args.suite)
        if cached is not None:
            console.print(results_table(cached))
            console.print("all from the result cache: nothing evaluated, no new MLflow run")
            return 0
    from flows.benchmark import BenchmarkParams, preflight
    from flows.benchmark import benchmark as run

    params = BenchmarkParams(
        config=args.config, model=args.model, suites=args.suite, batch_size=args.batch_size, backend=args.backend
    )
    preflight(params)  # bad input fails here, before Prefect or the store start
    with console.status(f"benchmarking model {args.model} (lm-eval runs only uncached tasks)"):
        res = run_flow(run, params, engine=use_engine(cfg))
    console.print(results_table(res))
    return 0


def from_cache(cfg, model: str, suites: list[str] | None) -> SimpleNamespace | None:
    """The figures of a benchmark that would evaluate nothing, read from the result cache; None
    where the `benchmark` flow has more to do.

    That is a local model folder (a registry model is resolved through MLflow), no golden or
    preference task (the flow first refreshes them from new feedback, which changes the task) and a
    cache hit for every task. The flow would only log those figures again in a new MLflow run;
    this answers without starting Prefect, MLflow or lm-eval. Anything unusual (an unknown
    suite or task, a store not yet created) also returns None, and the flow reports it.
    """
    from pathlib import Path

    path = Path(model).expanduser()
    names = suites or list(cfg.benchmark.suites)
    if not path.exists() or any(s not in cfg.benchmark.suites for s in names):
        return None
    plan = [(s, t) for s in names for t in cfg.benchmark.suites[s].tasks]
    if not plan or any(t.kind in ("golden", "preference") for _, t in plan):
        return None
    if cfg.store_url.startswith("sqlite:///") and not Path(cfg.store_url[len("sqlite:///") :]).exists():
        return None
    from driftloop.core.errors import InputError
    from driftloop.store import Store
    from evaluators.cache import cache_key, evaluate_cached, model_fingerprint, spec_hash
    from evaluators.tasks import TASKS_DIR

    includes = [TASKS_DIR, *(cfg.path(d) for d in cfg.benchmark.task_dirs)]
    if not all(d.is_dir() for d in includes):
        return None
    # Local data folders resolve against the config file, as the flow's plan does.
    plan = [(s, t.model_copy(update={"data_dir": str(cfg.path(t.data_dir))}) if t.data_dir else t) for s, t in plan]
    with Store(cfg.store_url) as store:
        store.migrate()
        try:
            fingerprint = model_fingerprint(path)
            keys = [cache_key(fingerprint, spec_hash(t, includes), t) for _, t in plan]
        except InputError:
            return None
        if not all(store.load_samples(k) for k in keys):
            return None
        results, _ = evaluate_cached(store, path, fingerprint, plan, includes, model_id=str(path))
    metrics: dict = {}
    for r in results:
        metrics.setdefault(r.suite, []).extend(r.metrics)
    return SimpleNamespace(model=str(path), metrics=metrics)
