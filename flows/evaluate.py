"""`evaluate` flow: monitor and benchmark one model now, on demand, in one MLflow run.

The same flow serves `driftloop evaluate`, the Prefect deployment `evaluate/on-demand`,
`POST /v1/evaluations` and the MLflow registry webhook. Its parent MLflow run is tagged
`driftloop.kind=evaluation` (plus the model and version); the monitor and benchmark stages
are nested runs under it; every figure is logged on the parent with its interval, and the
whole `EvaluationResult` as `evaluation.json`.

    >>> res = evaluate(model="2", suites=["canary"], window="7d", config="driftloop.yaml")
    >>> res.suites["canary"][0].value, res.monitor["n_current"]
    (0.98, 1200)

    $ prefect deployment run 'evaluate/on-demand' -p model=2 -p window=24h

The window syntax (`7d`, `24h`, `2025-01-01..2025-01-08`) is documented in
`driftloop.services.evaluation`. The monitor part reads production feedback in the window (whatever
model served it); the benchmark part runs the suites on the model asked for.
"""

from __future__ import annotations

from datetime import timedelta

from prefect import flow

from driftloop.core import tags as T
from driftloop.core.config import load_config
from driftloop.core.errors import DriftloopError
from driftloop.core.types import MetricResult
from driftloop.services.evaluation import (
    KIND,
    RESULT_ARTIFACT,
    EvaluationResult,
    WindowSpec,
    check_model_ref,
    check_registered,
    is_model_folder,
    parse_window,
)
from driftloop.services.windows import Windows, resolve_windows
from flows.benchmark import BenchmarkParams, benchmark
from flows.benchmark import preflight as bench_preflight
from flows.common import Context, StageParams, context, log, stage_run
from flows.monitor import MonitorResult, champion_reference, monitor, read_task, record_monitor, text_task


def preflight(
    model: str | int, suites: list[str] | None, window: str | None, config: str | None
) -> tuple[str, list[str], WindowSpec | None]:
    """Check the request before any run starts: the model reference (and that the alias or
    version exists in the registry), the window spec, the suite names and their tasks.
    Returns (model, suites, window); an InputError names what is wrong."""
    load_config(config)
    ref = check_model_ref(str(model))
    spec = parse_window(window)
    names = bench_preflight(BenchmarkParams(config=config, model=ref, suites=suites))
    check_registered(context(StageParams(config=config)).tracker, ref)
    return ref, names, spec


def window_for(ctx: Context, spec: WindowSpec) -> Windows | None:
    """The monitor windows for `spec`: its current window, with the reference `monitor.windows`
    asks for (pinned, the champion's window, or the `reference_days` just before it)."""
    wc = ctx.cfg.monitor.windows
    champ, label = champion_reference(ctx)
    if spec.days is not None:
        return resolve_windows(
            ctx.store, wc.model_copy(update={"slide_by": "time", "current_days": spec.days}), champ, label
        )
    if wc.reference == "pinned":
        return Windows(wc.pinned_start, wc.pinned_end, spec.start, spec.end, "pinned")
    if champ is not None:
        return Windows(champ.current_start, champ.current_end, spec.start, spec.end, label)
    return Windows(
        spec.start - timedelta(days=wc.reference_days),
        spec.start,
        spec.start,
        spec.end,
        f"preceding {wc.reference_days:g} days",
    )


def monitor_window(params: StageParams, spec: WindowSpec) -> MonitorResult:
    """The monitor stage on an explicit window (the `monitor` flow serves the configured one):
    same evaluators, same nested MLflow run and artifacts, without the profile cache or the
    Evidently workspace (an ad hoc window is not part of the loop's timeline)."""
    from evaluators.monitoring import monitor_frames

    ctx = context(params)
    w = window_for(ctx, spec)
    if w is None:
        log().warning("evaluate: the store holds no events yet")
        return MonitorResult()
    log().info(
        "evaluate: window %s: current %s .. %s, reference %s .. %s (%s)",
        spec.spec,
        w.current_start,
        w.current_end,
        w.reference_start,
        w.reference_end,
        w.reference_source,
    )
    with stage_run(ctx, "monitor", params.parent_run_id) as run_id:
        cur = read_task(params, w.current_start, w.current_end)
        ref = read_task(params, w.reference_start, w.reference_end)
        out = monitor_frames(ref, cur, ctx.cfg.monitor, ctx.cfg.policy.min_n)
        text = text_task(params, w) if len(cur) and len(ref) else []
        return record_monitor(ctx, run_id, w, out, len(ref), len(cur), text, {"window": spec.spec}, seconds=out.seconds)


def _monitor_summary(mon: MonitorResult) -> dict:
    share = next((m.value for m in mon.drift if m.name == "drifted_share"), None)
    return {
        "windows": mon.windows,
        "n_current": mon.n_current,
        "n_reference": mon.n_reference,
        "drifted_share": share,
        "drifted_columns": [
            m.segment.get("column", m.name) for m in mon.drift if m.passed is False and m.name != "drifted_share"
        ],
        "run_id": mon.run_id,
    }


@flow(name="evaluate")
def evaluate(
    model: str | int = "champion",
    suites: list[str] | None = None,
    window: str | None = None,
    config: str | None = None,
    run_id: str | None = None,
) -> EvaluationResult:
    """Monitor the feedback window and run the benchmark suites on `model` (champion,
    challenger, a registry version or a local model folder), all in one parent MLflow run.
    (`model` also takes an int: `prefect deployment run ... -p model=2` sends the JSON number 2.)

    `run_id` is a run created beforehand (the API creates it to answer at once); without
    one the flow creates it. Bad input is an InputError; whatever fails marks the run FAILED
    with its one-line reason in the tag `driftloop.error`.
    """
    ctx = None
    try:
        ref, names, spec = preflight(str(model), suites, window, config)
        ctx = context(StageParams(config=config))
        tr = ctx.tracker
        label, path = tr.resolve(ref)  # a registry version is downloaded once, then cached
        version = label if label.isdigit() else ""
        tags = {
            T.KIND: KIND,
            T.MODEL: ref,
            T.MODEL_VERSION: version,
            T.MODEL_PATH: str(path),
            T.WINDOW: spec.spec if spec else "",
            T.SUITES: ",".join(names),
        }
        if run_id is None:
            run_id = tr.start_run("evaluate-path" if is_model_folder(ref) else f"evaluate-{ref}", tags=tags)
        else:
            tr.set_tags(run_id, tags)
            tr.set_run_status(run_id, "RUNNING")
    except BaseException as e:
        if run_id is not None:
            _fail(ctx, config, run_id, e)
        raise
    log().info("evaluate %s (version %s): run %s", ref, version or "-", run_id)
    try:
        sp = StageParams(config=config, parent_run_id=run_id)
        mon = monitor_window(sp, spec) if spec else monitor(sp)
        bench = benchmark(BenchmarkParams(**sp.model_dump(), model=label, suites=names))
        flat: list[MetricResult] = list(mon.current) + list(mon.bias) + list(mon.drift) + list(mon.text)
        flat += [m for ms in bench.metrics.values() for m in ms]
        res = EvaluationResult(
            run_id=run_id,
            model=ref,
            version=version,
            model_path=str(path),
            window=spec.spec if spec else "",
            suites=bench.metrics,
            monitor=_monitor_summary(mon),
            metrics=flat,
            benchmark_run_id=bench.run_id,
            link=tr.run_link(run_id),
        )
        tr.log_metric_results(run_id, flat, "evaluation_metrics.json")
        tr.log_dict(run_id, res.model_dump(mode="json"), RESULT_ARTIFACT)
    except BaseException as e:
        _fail(ctx, config, run_id, e)
        raise
    tr.end_run(run_id)
    log().info("evaluate %s: %d figures logged to run %s", ref, len(flat), run_id)
    return res


def _fail(ctx: Context | None, config: str | None, run_id: str, err: BaseException) -> None:
    """Mark the evaluation run FAILED with a one-line reason (best effort: the error itself is re-raised)."""
    line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if not isinstance(err, DriftloopError):
        line = f"{type(err).__name__}: {line}"
    try:
        tr = ctx.tracker if ctx is not None else context(StageParams(config=config)).tracker
        tr.set_tags(run_id, {T.ERROR: line[:500]})
        tr.end_run(run_id, failed=True)
    except Exception:  # noqa: BLE001 - the original error matters more than this one
        log().warning("evaluate: could not mark run %s failed", run_id)
