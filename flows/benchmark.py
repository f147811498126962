"""`benchmark` flow: refresh the golden set from corrected feedback, then run the
configured lm-eval suites on one model, reusing cached per-item results.

A result is cached under (model fingerprint, task hash, lm-eval version,
few-shot, limit, metric), so re-evaluating an unchanged model on an unchanged
task loads nothing.

    >>> res = benchmark(BenchmarkParams(config="driftloop.yaml", model="champion"))
    >>> res.metrics["canary"][0].value
    0.98
"""

from __future__ import annotations

import hashlib
from importlib.metadata import version as pkg_version
from pathlib import Path

from prefect import flow, task
from pydantic import BaseModel, Field

from driftloop.config import TaskSpec
from driftloop.errors import InputError
from driftloop.types import MetricResult, SampleResults
from driftloop import stats
from evaluators.benchmark import TASKS_DIR, run_tasks, task_hash
from evaluators.golden import GoldenTask, split_corrections, write_golden_task
from flows.common import StageParams, context, log, stage_run


class BenchmarkParams(StageParams):
    model: str = Field(default="champion", description="champion, challenger, a version number, or a local path.")
    suites: list[str] | None = Field(default=None, description="Suite names; default: every configured suite.")


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


def model_fingerprint(label: str, path: Path, source: str = "") -> str:
    """Registry versions: the version and its artifact source; paths: sha256 of the weight files."""
    if source:
        return hashlib.sha256(f"{label}\x00{source}".encode()).hexdigest()
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.suffix in {".safetensors", ".bin", ".json", ".model", ".txt"}:
            h.update(f.relative_to(path).as_posix().encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def _cache_key(fingerprint: str, thash: str, spec: TaskSpec) -> str:
    parts = [fingerprint, thash, pkg_version("lm-eval"), str(spec.num_fewshot), str(spec.limit), spec.metric]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _project_hash(name: str) -> str | None:
    y = TASKS_DIR / f"{name}.yaml"
    return task_hash(y) if y.is_file() else None


def _summary_metric(s: SampleResults, cached: bool) -> MetricResult:
    vals = list(s.items.values())
    binary = all(v in (0.0, 1.0) for v in vals)
    if binary:
        v, lo, hi = stats.wilson(int(sum(vals)), len(vals))
    else:
        v, lo, hi = stats.bootstrap_mean(vals)
    return MetricResult(name=f"{s.task}/{s.metric}", value=v, ci_low=lo, ci_high=hi, n=len(vals),
                        source="benchmark", note="cached" if cached else "")


@flow(name="benchmark")
def benchmark(params: BenchmarkParams = BenchmarkParams()) -> BenchmarkResult:
    """Run the suites on one model; per-item results are stored and logged for paired tests."""
    ctx = context(params)
    cfg, store, tr = ctx.cfg, ctx.store, ctx.tracker
    suites = params.suites or list(cfg.benchmark.suites)
    unknown = [s for s in suites if s not in cfg.benchmark.suites]
    if unknown:
        import difflib

        near = difflib.get_close_matches(unknown[0], list(cfg.benchmark.suites), n=3)
        raise InputError(f"suite {unknown[0]!r} is not configured" + (f"; did you mean {', '.join(near)}?" if near else ""))
    sp = StageParams(config=params.config, parent_run_id=params.parent_run_id)
    golden, counts = refresh_golden(sp)
    label, path = tr.resolve(params.model)
    source = tr.version_info(label)["source"] if label.isdigit() else ""
    fingerprint = model_fingerprint(label, path, source)
    out = BenchmarkResult(model=label, golden_hash=golden.task_hash if golden else "", golden_counts=counts)
    with stage_run(ctx, f"benchmark-{params.model}", params.parent_run_id) as run_id:
        out.run_id = run_id
        tr.set_tags(run_id, {"driftloop.model_version": label, "driftloop.golden_hash": out.golden_hash})
        tr.log_params(run_id, {"model": label, "model_fingerprint": fingerprint[:16], **counts})
        plan: list[tuple[str, TaskSpec, str | None]] = []  # (suite, spec, cache key)
        for suite in suites:
            for spec in cfg.benchmark.suites[suite].tasks:
                if spec.kind == "golden":
                    if golden is None:
                        log().warning("suite %s: no golden items yet; %s skipped", suite, spec.name)
                        continue
                    thash = golden.task_hash
                else:
                    thash = _project_hash(spec.name)
                plan.append((suite, spec, _cache_key(fingerprint, thash, spec) if thash else None))
        todo = []
        for suite, spec, key in plan:
            hit = store.load_samples(key) if key else None
            if hit:
                s = SampleResults(task=hit["task"], model=label, metric=hit["metric"], items=hit["items"],
                                  detail=hit["detail"], task_hash="")
                out.samples.setdefault(suite, []).append(s)
                out.metrics.setdefault(suite, []).append(_summary_metric(s, cached=True))
            else:
                todo.append((suite, spec, key))
        if todo:
            includes = [TASKS_DIR] + ([golden.yaml_path.parent] if golden else [])
            log().info("benchmark %s: running %d task(s) with lm-eval", label, len(todo))
            res = run_tasks(path, [spec for _, spec, _ in todo], includes, batch_size=cfg.benchmark.batch_size,
                            device="cpu" if cfg.model.device == "auto" else cfg.model.device, model_id=label)
            by_task = {s.task: s for s in res.samples}
            for suite, spec, key in todo:
                s = by_task[spec.name]
                if key:
                    store.save_samples(key, s.task, label, s.metric, s.items, s.detail)
                out.samples.setdefault(suite, []).append(s)
                out.metrics.setdefault(suite, []).append(_summary_metric(s, cached=False))
            tr.log_dict(run_id, res.raw, "lm_eval_results.json")
        for suite, samples in out.samples.items():
            for s in samples:
                tr.log_dict(run_id, s.model_dump(mode="json"), f"samples/{suite}/{s.task}.json")
        tr.log_metric_results(run_id, [m for ms in out.metrics.values() for m in ms])
        if golden:
            tr.log_artifacts(run_id, golden.yaml_path.parent, "golden_task")
        return out
