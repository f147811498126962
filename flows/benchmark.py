"""`benchmark` flow: refresh the golden set from corrected feedback, then run the
configured lm-eval suites on one model, reusing cached per-item results.

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

import difflib
from pathlib import Path
from typing import Literal

from prefect import flow, task
from pydantic import BaseModel, Field

from driftloop.config import TaskSpec, load_config, looks_like_path
from driftloop.errors import InputError
from driftloop.types import MetricResult, SampleResults
from evaluators.benchmark import TASKS_DIR
from evaluators.cache import evaluate_cached, model_fingerprint, spec_hash
from evaluators.golden import GoldenTask, split_corrections, write_golden_task
from flows.common import StageParams, context, log, stage_run


class BenchmarkParams(StageParams):
    model: str = Field(default="champion", description="champion, challenger, a version number, or a local path.")
    suites: list[str] | None = Field(default=None, description="Suite names; default: every configured suite.")
    batch_size: int | Literal["auto"] | None = Field(default=None, description="Overrides benchmark.batch_size.")
    backend: Literal["hf", "vllm"] | None = Field(default=None, description="Overrides benchmark.backend.")


class BenchmarkResult(BaseModel):
    model: str
    samples: dict[str, list[SampleResults]] = Field(default_factory=dict)
    metrics: dict[str, list[MetricResult]] = Field(default_factory=dict)
    run_id: str = ""
    golden_hash: str = ""
    golden_counts: dict[str, int] = Field(default_factory=dict)


@task(name="refresh-golden-set")
def refresh_golden(params: StageParams) -> tuple[GoldenTask | None, dict[str, int]]:
    """Split new corrected feedback into golden/train (existing items never move) and write the task."""
    ctx = context(params)
    store, cfg = ctx.store, ctx.cfg
    golden_now = [i["prompt"] for i in store.items("golden")]
    split = split_corrections(store.corrected_events(), store.item_splits(), cfg.golden, golden_prompts=golden_now)
    added = store.add_items(list(split.golden) + list(split.train))
    items = store.items("golden")
    counts = {"golden": len(items), "train": len(store.items("train")), "new_items": added,
              "near_duplicates_dropped": split.near_duplicates}
    log().info("golden set: %(golden)d items, training pool %(train)d, %(new_items)d new", counts)
    if not items:
        return None, counts
    return write_golden_task(items, cfg.state_path / "tasks" / "golden", cfg.golden.num_choices), counts


def _plan(cfg, suites: list[str], golden: GoldenTask | None, quiet: bool = False) -> list[tuple[str, TaskSpec]]:
    """(suite, spec) pairs to evaluate; local data folders resolved against the config file."""
    plan = []
    for suite in suites:
        for spec in cfg.benchmark.suites[suite].tasks:
            if spec.kind == "golden" and golden is None:
                if not quiet:
                    log().warning("suite %s: no golden items yet; %s skipped", suite, spec.name)
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
        raise InputError(f"suite {unknown[0]!r} is not configured" + (f"; did you mean {', '.join(near)}?" if near else ""))
    if looks_like_path(params.model) and not Path(params.model).expanduser().exists():
        raise InputError(f"model path does not exist: {params.model}")
    includes = [TASKS_DIR, *(cfg.path(d) for d in cfg.benchmark.task_dirs)]
    for d in includes:
        if not d.is_dir():
            raise InputError(f"benchmark.task_dirs: folder does not exist: {d}")
    for _, spec in _plan(cfg, suites, None, quiet=True):
        spec_hash(spec, includes)  # unknown task, missing data file -> InputError
    return suites


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
    label, path = tr.resolve(params.model)
    source = tr.version_info(label)["source"] if label.isdigit() else ""
    fingerprint = model_fingerprint(path, label, source)
    out = BenchmarkResult(model=label, golden_hash=golden.task_hash if golden else "", golden_counts=counts)
    includes = [TASKS_DIR, *(cfg.path(d) for d in cfg.benchmark.task_dirs)] + ([golden.yaml_path.parent] if golden else [])
    with stage_run(ctx, f"benchmark-{params.model}", params.parent_run_id) as run_id:
        out.run_id = run_id
        tr.set_tags(run_id, {"driftloop.model_version": label, "driftloop.golden_hash": out.golden_hash})
        tr.log_params(run_id, {"model": label, "model_fingerprint": fingerprint[:16], **counts})
        plan = _plan(cfg, suites, golden)
        log().info("benchmark %s: %d task(s); lm-eval runs only those not cached", label, len(plan))
        results, ran = evaluate_cached(store, path, fingerprint, plan, includes, model_id=label,
                                       batch_size=params.batch_size or cfg.benchmark.batch_size, device=cfg.model.device,
                                       backend=params.backend or cfg.benchmark.backend)
        for r in results:
            out.samples.setdefault(r.suite, []).append(r.samples)
            out.metrics.setdefault(r.suite, []).extend(r.metrics)
            tr.log_dict(run_id, r.samples.model_dump(mode="json"), f"samples/{r.suite}/{r.samples.task}.json")
        hits = sum(r.cached for r in results)
        log().info("benchmark %s: %d cached, %d evaluated%s", label, hits, len(results) - hits,
                   f" in {ran.seconds:.1f} s" if ran else "")
        if ran is not None:
            tr.log_dict(run_id, ran.raw, "lm_eval_results.json")
        tr.log_metric_results(run_id, [m for ms in out.metrics.values() for m in ms])
        if golden:
            tr.log_artifacts(run_id, golden.yaml_path.parent, "golden_task")
        return out
