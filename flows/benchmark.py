"""`benchmark` flow: refresh the golden set from corrected feedback, then run the
configured lm-eval suites on one model, reusing cached per-item results.

Suites run where `runner:` says: all in one lm-eval call here (serial, the default),
or one per Dask worker process through prefect-dask (`kind: dask`);
`BenchmarkResult.executed_on` records the host, PID and Dask worker of each suite.

A result is cached under (model fingerprint, task hash, lm-eval version,
few-shot, limit, metric, seed) by `evaluators.cache`, so re-evaluating an
unchanged model on an unchanged task loads nothing. Per-item results go to the
store and to MLflow (`samples/<suite>/<task>.json`); aggregates are marked
`note="cached"` when they came from the store.

    >>> res = benchmark(BenchmarkParams(config="driftloop.yaml", model="champion"))
    >>> res.metrics["canary"][0].value
    0.98
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from pydantic import BaseModel, Field

from driftloop.core import tags as T
from driftloop.core.config import RunnerConfig, TaskSpec, load_config, looks_like_path
from driftloop.core.errors import InputError, StageError
from driftloop.core.types import MetricResult, SampleResults
from driftloop.services.preference import golden_pairs
from evaluators.benchmark import TASKS_DIR, BenchmarkOutput
from evaluators.cache import CachedTask, evaluate_cached, model_fingerprint, spec_hash
from evaluators.golden import GoldenTask, split_corrections, write_golden_task
from evaluators.preference_task import reward_margin, write_preference_task
from evaluators.task_data import task_data
from flows.common import Context, StageParams, context, log, stage_run


class BenchmarkParams(StageParams):
    model: str = Field(default="champion", description="champion, challenger, a version number, or a local path.")
    suites: list[str] | None = Field(default=None, description="Suite names; default: every configured suite.")
    batch_size: int | Literal["auto"] | None = Field(default=None, description="Overrides benchmark.batch_size.")
    backend: Literal["hf", "vllm"] | None = Field(default=None, description="Overrides benchmark.backend.")


class Placement(BaseModel):
    """The process that evaluated a suite (its cached tasks included)."""

    host: str
    pid: int
    worker: str = Field(default="", description="Dask worker name and address; empty outside Dask.")

    @classmethod
    def here(cls) -> Placement:
        worker = ""
        dist = sys.modules.get("distributed")  # never imported outside Dask: no import cost on the serial path
        if dist is not None:
            try:
                w = dist.get_worker()  # ValueError outside a Dask worker
                worker = f"{w.name} ({w.address})"
            except ValueError:
                pass
        return cls(host=socket.gethostname(), pid=os.getpid(), worker=worker)


class BenchmarkResult(BaseModel):
    model: str
    samples: dict[str, list[SampleResults]] = Field(default_factory=dict)
    metrics: dict[str, list[MetricResult]] = Field(default_factory=dict)
    run_id: str = ""
    golden_hash: str = ""
    golden_counts: dict[str, int] = Field(default_factory=dict)
    executed_on: dict[str, Placement] = Field(
        default_factory=dict, description="Suite -> the process that evaluated it."
    )


@task(name="refresh-golden-set")
def refresh_golden(params: StageParams) -> tuple[GoldenTask | None, dict[str, int]]:
    """Split new corrected feedback into golden/train (existing items never move) and write the task."""
    ctx = context(params)
    store, cfg = ctx.store, ctx.cfg
    golden_now = [i["prompt"] for i in store.items("golden")]
    split = split_corrections(store.corrected_events(), store.item_splits(), cfg.golden, golden_prompts=golden_now)
    added = store.add_items(list(split.golden) + list(split.train))
    items = store.items("golden")
    counts = {
        "golden": len(items),
        "train": len(store.items("train")),
        "new_items": added,
        "near_duplicates_dropped": split.near_duplicates,
    }
    log().info("golden set: %(golden)d items, training pool %(train)d, %(new_items)d new", counts)
    if not items:
        return None, counts
    return write_golden_task(items, cfg.state_path / "tasks" / "golden", cfg.golden.num_choices), counts


@task(name="refresh-preference-set")
def refresh_preference(params: StageParams) -> tuple[GoldenTask | None, dict[str, int]]:
    """The golden side's (chosen, rejected) pairs as the `driftloop_preference` task, once there are
    `golden.min_preference_pairs` of them (after `refresh_golden`, which files new corrections)."""
    ctx = context(params)
    cfg = ctx.cfg
    pairs, quarantined = golden_pairs(ctx.store, cfg.golden)
    counts = {"preference_pairs": len(pairs), "preference_quarantined": quarantined}
    if len(pairs) < cfg.golden.min_preference_pairs:
        log().info(
            "preference set: %d golden pairs, %d needed (golden.min_preference_pairs): not evaluated yet",
            len(pairs),
            cfg.golden.min_preference_pairs,
        )
        return None, counts
    log().info("preference set: %d golden pairs, %d quarantined as identical", len(pairs), quarantined)
    return write_preference_task(pairs, cfg.state_path / "tasks" / "preference"), counts


def _plan(
    cfg, suites: list[str], golden: GoldenTask | None, preference: GoldenTask | None = None, quiet: bool = False
) -> list[tuple[str, TaskSpec]]:
    """(suite, spec) pairs to evaluate; local data folders resolved against the config file."""
    plan = []
    for suite in suites:
        for spec in cfg.benchmark.suites[suite].tasks:
            if spec.kind == "golden" and golden is None:
                if not quiet:
                    log().warning("suite %s: no golden items yet; %s skipped", suite, spec.name)
                continue
            if spec.kind == "preference" and preference is None:
                if not quiet:
                    log().warning(
                        "suite %s: fewer than golden.min_preference_pairs (%d) golden pairs yet; %s skipped",
                        suite,
                        cfg.golden.min_preference_pairs,
                        spec.name,
                    )
                continue
            if spec.data_dir:
                spec = spec.model_copy(update={"data_dir": str(cfg.path(spec.data_dir))})
            plan.append((suite, spec))
    return plan


def preflight(params: BenchmarkParams) -> list[str]:
    """The suites to run, after checking names, model path and every non-golden task (no writes)."""
    cfg = load_config(params.config)
    suites = params.suites or list(cfg.benchmark.suites)
    unknown = [s for s in suites if s not in cfg.benchmark.suites]
    if unknown:
        near = difflib.get_close_matches(unknown[0], list(cfg.benchmark.suites), n=3)
        raise InputError(
            f"suite {unknown[0]!r} is not configured" + (f"; did you mean {', '.join(near)}?" if near else "")
        )
    if looks_like_path(params.model) and not Path(params.model).expanduser().exists():
        raise InputError(f"model path does not exist: {params.model}")
    includes = [TASKS_DIR, *(cfg.path(d) for d in cfg.benchmark.task_dirs)]
    for d in includes:
        if not d.is_dir():
            raise InputError(f"benchmark.task_dirs: folder does not exist: {d}")
    for _, spec in _plan(cfg, suites, None, None, quiet=True):
        spec_hash(spec, includes)  # unknown task, missing data file -> InputError
    return suites


def task_runner(runner: RunnerConfig):
    """prefect-dask's DaskTaskRunner for `runner:`; the flow enters it at run time, so a deployment
    follows the config rather than the flow decorator. Without an address it starts a LocalCluster
    (or, like prefect-dask, joins the cluster of a Dask client already current in this process)."""
    from prefect_dask import DaskTaskRunner

    if runner.address:
        return DaskTaskRunner(address=runner.address)
    from prefect.client.orchestration import get_client

    # The API this flow reports to (its temporary server when none is configured): without it each
    # worker would start a temporary Prefect server of its own on the same database.
    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)
    # Processes with one thread each: one process must not load two models at once (see _ONE_EVALUATION).
    # ":0": the scheduler's HTTP server takes a free port, so concurrent runs never fight over 8787.
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": runner.n_workers,
            "processes": True,
            "threads_per_worker": 1,
            "dashboard_address": ":0",
            "env": {"PREFECT_API_URL": api_url},
        }
    )


@dataclasses.dataclass
class SuiteRun:
    """What `suite_task` sends back: the suite's outcomes, lm-eval's output for its misses, and where it ran."""

    results: list[CachedTask]
    ran: BenchmarkOutput | None
    placement: Placement


# Two evaluations at once in one process can corrupt each other: while it loads a model, transformers
# swaps torch.nn.init functions and PreTrainedModel methods (init, weight tying) for the whole process.
_ONE_EVALUATION = threading.Lock()


def evaluate_suite(
    config: str | None,
    suite: str,
    specs: list[TaskSpec],
    model_path: str,
    fingerprint: str,
    model_id: str,
    includes: list[str],
    store_url: str,
    run_kwargs: dict[str, Any],
    threads: int | None = None,
) -> SuiteRun:
    """Evaluate one suite's tasks (cache first) in this process, one suite at a time per process.

    The context is rebuilt from the config path; a worker whose config names another store
    than the flow's (`store_url`) is a StageError rather than a cache written elsewhere.
    """
    ctx = context(StageParams(config=config))
    if ctx.cfg.store_url != store_url:
        raise StageError(
            f"suite {suite}: this worker's config gives store {ctx.cfg.store_url}, the flow uses "
            f"{store_url}; give workers the same driftloop.yaml and DRIFTLOOP_* environment"
        )
    with _ONE_EVALUATION:  # a worker with several Dask threads still evaluates one suite at a time
        if threads:
            import torch

            torch.set_num_threads(threads)  # process-wide, hence under the lock
        results, ran = evaluate_cached(
            ctx.store,
            model_path,
            fingerprint,
            [(suite, s) for s in specs],
            [Path(p) for p in includes],
            model_id=model_id,
            **run_kwargs,
        )
    return SuiteRun(results, ran, Placement.here())


# Inputs are plain values (paths, names, specs): a Dask worker is another process, possibly another host.
# The body is a module-level function so that Dask pickles it by reference (a task's own function is
# pickled by value, with every global it names).
@task(name="evaluate-suite", cache_policy=NO_CACHE)
def suite_task(
    config: str | None,
    suite: str,
    specs: list[TaskSpec],
    model_path: str,
    fingerprint: str,
    model_id: str,
    includes: list[str],
    store_url: str,
    run_kwargs: dict[str, Any],
    threads: int | None = None,
) -> SuiteRun:
    """Evaluate one suite in whatever process the task runner chose (see `evaluate_suite`)."""
    return evaluate_suite(
        config, suite, specs, model_path, fingerprint, model_id, includes, store_url, run_kwargs, threads
    )


def _merge_raw(outputs: list[BenchmarkOutput]) -> dict[str, Any]:
    """lm-eval's raw results of several runs as one: per-task tables merged, the rest from the first run."""
    raw: dict[str, Any] = {}
    for o in outputs:
        for k, v in o.raw.items():
            if isinstance(v, dict) and isinstance(raw.get(k), dict):
                raw[k] = {**raw[k], **v}
            else:
                raw.setdefault(k, v)
    return raw


def _spread(
    params: BenchmarkParams,
    cfg,
    plan: list[tuple[str, TaskSpec]],
    path: Path,
    fingerprint: str,
    label: str,
    includes: list[Path],
    run_kwargs: dict[str, Any],
):
    """Evaluate each suite as a task on `cfg.runner`'s task runner; outcomes in plan order.

    A task listed in several suites is evaluated once, in the first of them, as in the serial path.
    """
    units: dict[str, list[TaskSpec]] = {}
    seen: set[str] = set()
    for suite, spec in plan:
        if spec.name not in seen:
            seen.add(spec.name)
            units.setdefault(suite, []).append(spec)
    # Absolute, so a worker with another working directory reads the same file.
    found = Path(params.config or os.environ.get("DRIFTLOOP_CONFIG") or "driftloop.yaml").resolve()
    config = str(found) if found.exists() else None  # None: defaults (+ DRIFTLOOP_* env) there too
    t0 = time.monotonic()
    runs: dict[str, SuiteRun] = {}
    with task_runner(cfg.runner) as runner:
        futures = {
            runner.submit(
                suite_task,
                {
                    "config": config,
                    "suite": suite,
                    "specs": specs,
                    "model_path": str(path),
                    "fingerprint": fingerprint,
                    "model_id": label,
                    "includes": [str(p) for p in includes],
                    "store_url": cfg.store_url,
                    "run_kwargs": run_kwargs,
                    "threads": cfg.runner.threads_per_worker,
                },
            ): suite
            for suite, specs in units.items()
        }
        for fut in as_completed(list(futures)):
            suite = futures[fut]
            runs[suite] = fut.result()
            p = runs[suite].placement
            log().info(
                "benchmark: suite %s done (%d/%d) on %s pid %d%s",
                suite,
                len(runs),
                len(units),
                p.host,
                p.pid,
                f", dask worker {p.worker}" if p.worker else "",
            )
    by_name = {r.spec.name: r for run in runs.values() for r in run.results}
    results = [dataclasses.replace(by_name[spec.name], suite=suite, spec=spec) for suite, spec in plan]
    outputs = [run.ran for run in runs.values() if run.ran is not None]
    ran = (
        BenchmarkOutput(
            samples=[s for o in outputs for s in o.samples],
            metrics=[m for o in outputs for m in o.metrics],
            raw=_merge_raw(outputs),
            seconds=time.monotonic() - t0,
        )
        if outputs
        else None
    )
    owner = {spec.name: suite for suite, specs in units.items() for spec in specs}
    placed: dict[str, Placement] = {}
    for suite, spec in plan:  # a suite whose tasks all ran elsewhere reports where they ran
        placed.setdefault(suite, runs[suite if suite in runs else owner[spec.name]].placement)
    return results, ran, placed


@flow(name="benchmark")
def benchmark(params: BenchmarkParams = BenchmarkParams()) -> BenchmarkResult:
    """Run the suites on one model; per-item results are stored and logged for paired tests.

    Bad input (unknown suite or task, missing data file or model path) is an InputError
    raised before anything is written.
    """
    suites = preflight(params)
    ctx = context(params)
    cfg, store, tr = ctx.cfg, ctx.store, ctx.tracker
    sp = StageParams(config=params.config, parent_run_id=params.parent_run_id)
    golden, counts = refresh_golden(sp)
    preference, pref_counts = refresh_preference(sp)
    counts = {**counts, **pref_counts}
    label, path = tr.resolve(params.model)
    source = tr.version_info(label)["source"] if label.isdigit() else ""
    fingerprint = model_fingerprint(path, label, source)
    out = BenchmarkResult(model=label, golden_hash=golden.task_hash if golden else "", golden_counts=counts)
    includes = [TASKS_DIR, *(cfg.path(d) for d in cfg.benchmark.task_dirs)] + [
        t.yaml_path.parent for t in (golden, preference) if t
    ]
    with stage_run(ctx, f"benchmark-{params.model}", params.parent_run_id) as run_id:
        out.run_id = run_id
        tr.set_tags(run_id, {T.MODEL_VERSION: label, T.GOLDEN_HASH: out.golden_hash, T.RUNNER: cfg.runner.kind})
        if label.isdigit():  # the evaluated version's LoggedModel lists this run among its inputs
            tr.log_model_input(run_id, label)
        tr.log_params(run_id, {"model": label, "model_fingerprint": fingerprint[:16], **counts})
        plan = _plan(cfg, suites, golden, preference)
        for d in task_data(plan, includes):  # the golden and canary sets as the run's dataset inputs
            tr.log_dataset(run_id, d.rows, d.task, "evaluation", d.path, digest=d.digest)
        log().info("benchmark %s: %d task(s); lm-eval runs only those not cached", label, len(plan))
        run_kwargs = {
            "batch_size": params.batch_size or cfg.benchmark.batch_size,
            "device": cfg.model.device,
            "backend": params.backend or cfg.benchmark.backend,
        }
        if cfg.runner.kind == "serial":  # one lm-eval call: the model is loaded once
            results, ran = evaluate_cached(store, path, fingerprint, plan, includes, model_id=label, **run_kwargs)
            out.executed_on = dict.fromkeys((s for s, _ in plan), Placement.here())
        else:
            log().info(
                "benchmark %s: %d suite(s) on Dask %s",
                label,
                len({s for s, _ in plan}),
                cfg.runner.address or f"LocalCluster of {cfg.runner.n_workers} worker process(es)",
            )
            results, ran, out.executed_on = _spread(params, cfg, plan, path, fingerprint, label, includes, run_kwargs)
        for r in results:
            out.samples.setdefault(r.suite, []).append(r.samples)
            out.metrics.setdefault(r.suite, []).extend(r.metrics)
            margin = reward_margin(r.samples) if r.spec.kind == "preference" else None
            if margin is not None:  # informative: the gate decides on the win rate
                out.metrics[r.suite].append(margin)
            tr.log_dict(run_id, r.samples.model_dump(mode="json"), f"samples/{r.suite}/{r.samples.task}.json")
        hits = sum(r.cached for r in results)
        log().info(
            "benchmark %s: %d cached, %d evaluated%s",
            label,
            hits,
            len(results) - hits,
            f" in {ran.seconds:.1f} s" if ran else "",
        )
        if ran is not None:
            tr.log_dict(run_id, ran.raw, "lm_eval_results.json")
        tr.log_metric_results(run_id, [m for ms in out.metrics.values() for m in ms])
        if golden:
            tr.log_artifacts(run_id, golden.yaml_path.parent, "golden_task")
        if preference:
            tr.log_artifacts(run_id, preference.yaml_path.parent, "preference_task")
        if params.model == "champion" and cfg.monitor.workspace:
            _save_figures(ctx, run_id, label, out)
        return out


def _save_figures(ctx: Context, run_id: str, label: str, out: BenchmarkResult) -> None:
    """The champion's scores as a snapshot of the Evidently workspace: the Bias tab plots the
    `bias` suites (BBQ) over time beside the segment gaps. Only the champion's, so each series
    follows the serving model. A dashboard never fails the stage: a failure is a warning."""
    from dashboards.evidently_workspace import benchmark_figures, save_snapshot

    cfg = ctx.cfg
    try:
        figures = benchmark_figures(out.metrics, {name: s.role for name, s in cfg.benchmark.suites.items()})
        saved = save_snapshot(
            cfg.state_path / "evidently",
            cfg.project,
            None,
            name=f"benchmark champion v{label}",
            timestamp=datetime.now(UTC),
            tags=["driftloop", "benchmark"],
            figures=figures,
            metadata={"mlflow_run_id": run_id, "model_version": label},
        )
        log().info("benchmark %s: figures saved to the Evidently workspace (snapshot %s)", label, saved.snapshot_id)
    except Exception as e:  # noqa: BLE001 - the scores are already in MLflow
        log().warning(
            "benchmark %s: figures not saved to the Evidently workspace: %s",
            label,
            str(e).splitlines()[0][:200] if str(e) else type(e).__name__,
        )
