"""`monitor` flow: drift, feedback quality and segment gaps on the current window
against the reference window.

    >>> res = monitor(StageParams(config="driftloop.yaml"))
    >>> [m.label() for m in res.current][:2]
    ['thumbs_up_rate', 'mean_rating']
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from prefect import flow, task

from driftloop.types import MetricResult
from driftloop.windows import windows
from evaluators.drift import drift_report
from evaluators.quality import quality_metrics, segment_gaps
from flows.common import StageParams, context, log, stage_run


class MonitorResult(BaseModel):
    windows: dict[str, str] = Field(default_factory=dict)
    n_reference: int = 0
    n_current: int = 0
    current: list[MetricResult] = Field(default_factory=list, description="Quality metrics of the current window.")
    reference: list[MetricResult] = Field(default_factory=list, description="Quality metrics of the reference window.")
    drift: list[MetricResult] = Field(default_factory=list)
    bias: list[MetricResult] = Field(default_factory=list)
    run_id: str = ""


@task(name="drift-report")
def drift_task(params: StageParams, run_id: str, ref, cur):
    ctx = context(params)
    out = drift_report(ref, cur, ctx.cfg.monitor.features + ctx.cfg.monitor.segment_fields,
                       drift_share=ctx.cfg.monitor.drift_share_alert)
    ctx.tracker.log_text(run_id, out.html, "drift_report.html")
    return out.metrics


@flow(name="monitor")
def monitor(params: StageParams = StageParams()) -> MonitorResult:
    """Read both windows (only the columns needed), run the evaluators, log everything."""
    ctx = context(params)
    mon = ctx.cfg.monitor
    bounds = ctx.store.time_bounds()
    if bounds is None:
        log().warning("monitor: the store holds no events yet")
        return MonitorResult()
    w = windows(bounds[0], bounds[1], mon.windows)
    with stage_run(ctx, "monitor", params.parent_run_id) as run_id:
        ref = ctx.store.read_window(w.reference_start, w.reference_end, mon.segment_fields)
        cur = ctx.store.read_window(w.current_start, w.current_end, mon.segment_fields)
        log().info("monitor: reference %d events, current %d events", len(ref), len(cur))
        ctx.tracker.log_params(run_id, {**w.as_dict(), "n_reference": len(ref), "n_current": len(cur)})
        drift = drift_task(params, run_id, ref, cur)
        min_n = ctx.cfg.policy.min_n
        current = quality_metrics(cur, mon.segment_fields, min_n=min_n)
        reference = quality_metrics(ref, mon.segment_fields, min_n=min_n)
        bias = segment_gaps(cur, mon.segment_fields, min_n=min_n)
        ctx.tracker.log_metric_results(run_id, current + bias + drift, "metrics_current.json")
        ctx.tracker.log_dict(run_id, [m.model_dump(mode="json") for m in reference], "metrics_reference.json")
        return MonitorResult(windows=w.as_dict(), n_reference=len(ref), n_current=len(cur), current=current,
                             reference=reference, drift=drift, bias=bias, run_id=run_id)
