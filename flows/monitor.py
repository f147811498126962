"""`monitor` flow: drift, feedback quality and segment gaps on the current window
against the reference window, logged to MLflow and saved to the Evidently workspace.

    >>> res = monitor(StageParams(config="driftloop.yaml"))
    >>> [m.label() for m in res.current][:2]
    ['thumbs_up_rate', 'mean_rating']

The windows come from `monitor.windows` (see `driftloop.services.windows`). A reference window
whose content has not changed is served from the profile cache under
`<state_dir>/monitor/profiles` without being read again. Judges (`judges:`) judge the
reference window too (`MonitorResult.reference_judged`); an unchanged reference judged by
unchanged judges comes from `<state_dir>/judges/windows` (`driftloop.services.judging`),
otherwise its events are read for them and verdicts already given come from the verdict cache.

With a champion scope (`scope`, set by the loop after a promotion), the
current window counts only the serving champion's traffic: events tagged with its
version, and untagged events at or after it took over (`driftloop.services.windows.in_scope`).
Feedback the previous champion earned never counts against the new one.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from driftloop.core import tags as T
from driftloop.core.judging import JudgeCalibration, JudgedWindow
from driftloop.core.loopstate import ChampionScope
from driftloop.core.types import MetricResult
from driftloop.services.judging import judge_figures
from driftloop.services.windows import (
    Windows,
    champion_window,
    in_scope,
    read_prompt_sample,
    record_window,
    resolve_windows,
    window_fingerprint,
)
from evaluators.monitoring import ReferenceCache, drift_columns, monitor_frames, reference_key
from flows.common import Context, StageParams, context, log, stage_run


class MonitorResult(BaseModel):
    windows: dict[str, str] = Field(default_factory=dict)
    n_reference: int = 0
    n_current: int = 0
    current: list[MetricResult] = Field(default_factory=list, description="Quality metrics of the current window.")
    reference: list[MetricResult] = Field(default_factory=list, description="Quality metrics of the reference window.")
    drift: list[MetricResult] = Field(default_factory=list, description="Per-column drift scores, then drifted_share.")
    text: list[MetricResult] = Field(default_factory=list, description="Drift of prompt descriptors and embeddings.")
    bias: list[MetricResult] = Field(default_factory=list)
    run_id: str = ""
    reference_cached: bool = Field(default=False, description="The reference came from the profile cache.")
    workspace: dict[str, str] = Field(
        default_factory=dict, description="Evidently workspace, project and snapshot ids."
    )
    seconds: dict[str, float] = Field(default_factory=dict, description="Wall time of each part (s).")
    scope: str = Field(default="", description="Which events the current window counts (empty: all of them).")
    fresh_events: int = Field(default=0, description="Current-window events newer than the flow's `fresh_after`.")
    current_newest: datetime | None = Field(
        default=None, description="Timestamp of the newest event the current window counts."
    )
    judged: JudgedWindow | None = Field(
        default=None, description="The judges' PPI++ estimates and findings on the current window (judges: only)."
    )
    judges: list[JudgeCalibration] = Field(
        default_factory=list, description="Each judge's agreement with the humans on the current window."
    )
    reference_judged: JudgedWindow | None = Field(
        default=None,
        description="The judges' PPI++ estimates and findings on the reference window: `decide` compares "
        "the current window's estimate with the reference's where the judge is trusted on both.",
    )
    reference_judges: list[JudgeCalibration] = Field(
        default_factory=list, description="Each judge's agreement with the humans on the reference window."
    )


class _Clock:
    """Calls a function and remembers its wall time (s) under a name, for `MonitorResult.seconds`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn, *args):
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds[name] = time.perf_counter() - t


def _monitor_dir(ctx: Context) -> Path:
    return ctx.cfg.state_path / "monitor"


def champion_reference(ctx: Context) -> tuple[Windows | None, str]:
    """With `monitor.windows.reference: champion`, the window recorded when the champion was
    promoted (None where none was) and its label; otherwise (None, "champion")."""
    if ctx.cfg.monitor.windows.reference != "champion":
        return None, "champion"
    version = ctx.tracker.alias_version("champion")
    if not version:
        return None, "champion"
    cycle_run = ctx.tracker.version_info(version)["tags"].get(T.CYCLE_RUN)
    champ = champion_window(_monitor_dir(ctx) / "windows.json", cycle_run)
    return champ, f"champion version {version}" + (f" (cycle run {cycle_run})" if cycle_run else "")


# NO_CACHE: Prefect would otherwise hash every input, a million-row frame included.
@task(name="resolve-windows", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def windows_task(params: StageParams) -> Windows | None:
    ctx = context(params)
    return resolve_windows(ctx.store, ctx.cfg.monitor.windows, *champion_reference(ctx))


@task(name="read-window", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def read_task(params: StageParams, start: datetime, end: datetime):
    ctx = context(params)
    return ctx.store.read_window(start, end, ctx.cfg.monitor.segment_fields)


@task(name="text-drift", retries=1, cache_policy=NO_CACHE)
def text_task(params: StageParams, w: Windows) -> list[MetricResult]:
    from evaluators.text_drift import text_drift

    ctx = context(params)
    t = ctx.cfg.monitor.text
    if not (t.descriptors or t.embeddings):
        return []
    ref = read_prompt_sample(ctx.store, w.reference_start, w.reference_end, t.sample, t.max_chars)
    cur = read_prompt_sample(ctx.store, w.current_start, w.current_end, t.sample, t.max_chars)
    return text_drift(ref, cur, t, ctx.cfg.policy.min_n)


@task(name="judges", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def judges_task(params: StageParams, frame, start: datetime, end: datetime, which: str, window_key: str | None = None):
    """Every judge on one window's events (`which`: current or reference, for the progress lines).

    `frame` None: the window is read here, and only where it is not in the judged-window
    store under `window_key` (the reference's cache key; None: always judged).
    """
    from driftloop.services.judging import judge_window_events

    ctx = context(params)
    fields = ctx.cfg.monitor.segment_fields
    source = frame if frame is not None else (lambda: ctx.store.read_window(start, end, fields))
    say = lambda s: log().info("%s window: %s", which, s)  # noqa: E731
    return judge_window_events(ctx.cfg, ctx.store, source, start, end, say, window_key=window_key)


@task(name="evidently-workspace", retries=1, cache_policy=NO_CACHE)
def workspace_task(
    params: StageParams, snapshot, w: Windows, run_id: str, figures: list[MetricResult] | None = None
) -> dict[str, str]:
    """Save the snapshot and `figures` to the project's workspace; the Judges tab where judges are configured."""
    from dashboards.evidently_workspace import save_snapshot

    ctx = context(params)
    folder = ctx.cfg.state_path / "evidently"
    saved = save_snapshot(
        folder,
        ctx.cfg.project,
        snapshot,
        name=f"monitor {w.current_end.isoformat()}",
        timestamp=w.current_end,
        metadata={"mlflow_run_id": run_id, **w.as_dict()},
        tags=["driftloop", "monitor"],
        figures=figures or [],
        judge_panels=bool(ctx.cfg.judges),
    )
    return {"workspace": saved.workspace, "project_id": saved.project_id, "snapshot_id": saved.snapshot_id}


@flow(name="monitor")
def monitor(
    params: StageParams = StageParams(), scope: ChampionScope | None = None, fresh_after: datetime | None = None
) -> MonitorResult:
    """Resolve the windows, read them (only the columns needed; the reference from the profile
    cache when unchanged), run the evaluators, log everything.

    `scope`: count only the serving champion's traffic in the current window. `fresh_after`:
    count the current-window events newer than this (`MonitorResult.fresh_events`).
    """
    ctx = context(params)
    mon, min_n = ctx.cfg.monitor, ctx.cfg.policy.min_n
    w = windows_task(params)
    if w is None:
        log().warning("monitor: the store holds no events yet")
        return MonitorResult()
    log().info(
        "monitor: current %s .. %s, reference %s .. %s (%s)",
        w.current_start,
        w.current_end,
        w.reference_start,
        w.reference_end,
        w.reference_source,
    )
    with stage_run(ctx, "monitor", params.parent_run_id) as run_id:
        clock = _Clock()
        cur = clock("read_current", read_task, params, w.current_start, w.current_end)
        if scope is not None:
            kept = in_scope(cur["model_version"].to_numpy(), cur["ts"], scope)
            log().info(
                "monitor: %d of %d current events are champion version %s's traffic",
                int(kept.sum()),
                len(cur),
                scope.version,
            )
            cur = cur[kept].reset_index(drop=True)
        fresh = int((cur["ts"] > fresh_after).sum()) if fresh_after is not None and len(cur) else len(cur)
        cache = ReferenceCache(_monitor_dir(ctx) / "profiles")
        fingerprint = window_fingerprint(ctx.store, w.reference_start, w.reference_end)
        key = reference_key(fingerprint, mon, min_n)
        hit = cache.get(key) if mon.profile_cache else None
        if hit is not None:
            reference, ref_quality, n_ref = hit[0], hit[1], hit[0].n_rows
            log().info("monitor: reference (%d events) from the profile cache", n_ref)
        else:
            reference, ref_quality = (
                clock("read_reference", read_task, params, w.reference_start, w.reference_end),
                None,
            )
            n_ref = len(reference)
        log().info(
            "monitor: reference %d events, current %d events; comparing %d columns",
            n_ref,
            len(cur),
            len(drift_columns(mon)),
        )
        _log_windows(ctx, run_id, w, cur, None if hit is not None else reference, fingerprint, scope)
        out = monitor_frames(reference, cur, mon, min_n, reference_quality=ref_quality)
        if hit is None and mon.profile_cache and out.reference_profile is not None:
            cache.put(key, out.reference_profile, out.reference)
        text = clock("text", text_task, params, w) if len(cur) and n_ref else []
        judged = ref_judged = None
        if ctx.cfg.judges and len(cur):
            judged = clock("judges", judges_task, params, cur, w.current_start, w.current_end, "current")
        if ctx.cfg.judges and n_ref:
            # The reference is judged too, so a drop compares an estimate with an estimate. Unchanged, it
            # comes from the judged-window store; served from the profile cache, it is read only if not.
            ref_judged = clock(
                "judges_reference",
                judges_task,
                params,
                reference if hit is None else None,
                w.reference_start,
                w.reference_end,
                "reference",
                key if mon.profile_cache else None,
            )
        saved: dict[str, str] = {}
        if mon.workspace and out.drift.snapshot is not None and _snapshot_due(ctx, out.drift.metrics):
            # Quality per segment, the segment gaps and the judges' figures ride in the same snapshot, for the panels.
            figures = (
                out.current
                + out.bias
                + (judge_figures(judged.calibrations, judged.window) if judged is not None else [])
            )
            saved = clock("workspace", workspace_task, params, out.drift.snapshot, w, run_id, figures)
            log().info("monitor: Evidently snapshot %s saved to %s", saved["snapshot_id"], saved["workspace"])
        if params.parent_run_id:
            record_window(_monitor_dir(ctx) / "windows.json", params.parent_run_id, w)
        scope_note = (
            (f"champion version {scope.version}: events tagged with it, untagged ones since {scope.since.isoformat()}")
            if scope is not None
            else ""
        )
        return record_monitor(
            ctx,
            run_id,
            w,
            out,
            n_ref,
            len(cur),
            text,
            {"reference_cached": hit is not None, "current_scope": scope_note or "all events"},
            reference_cached=hit is not None,
            workspace=saved,
            seconds={**out.seconds, **clock.seconds},
            scope=scope_note,
            fresh_events=fresh,
            current_newest=cur["ts"].max().to_pydatetime() if len(cur) else None,
            judged=judged.window if judged is not None else None,
            judges=judged.calibrations if judged is not None else [],
            reference_judged=ref_judged.window if ref_judged is not None else None,
            reference_judges=ref_judged.calibrations if ref_judged is not None else [],
        )


def _log_windows(ctx: Context, run_id: str, w: Windows, cur, reference, fingerprint: dict, scope) -> None:
    """Both windows as dataset inputs of the monitor run (MLflow's Datasets column). The reference's
    digest is its fingerprint's, so a reference served from the profile cache logs the same one."""
    import hashlib
    import json

    tr = ctx.tracker
    note = f"champion version {scope.version}'s traffic" if scope is not None else ""
    tr.log_window(run_id, cur, "current-window", w.current_start.isoformat(), w.current_end.isoformat(), note=note)
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    start, end = w.reference_start.isoformat(), w.reference_end.isoformat()
    tr.log_window(run_id, reference, "reference-window", start, end, digest=digest)


def _html_due(ctx: Context, drift: list[MetricResult]) -> bool:
    """`retention.drift_html`: store the HTML report every run, or where a drift test failed and
    otherwise once a day (the time of the last one kept as a marker file's mtime)."""
    return ctx.cfg.retention.drift_html == "always" or _daily_or_on_drift(ctx, drift, "last_drift_html")


def _snapshot_due(ctx: Context, drift: list[MetricResult]) -> bool:
    """`retention.workspace_snapshots`: save the Evidently snapshot every run, or as `_html_due`
    stores the HTML report (on drift, else once a day; a marker of its own)."""
    return ctx.cfg.retention.workspace_snapshots == "every_run" or _daily_or_on_drift(
        ctx, drift, "last_workspace_snapshot"
    )


def _daily_or_on_drift(ctx: Context, drift: list[MetricResult], name: str) -> bool:
    """Whether a drift test failed or a day has passed since marker `name` was last touched
    (touched when the answer is yes)."""
    marker = _monitor_dir(ctx) / name
    due = not marker.exists() or time.time() - marker.stat().st_mtime >= 86400  # 1 day, in seconds
    if due or any(m.passed is False for m in drift):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return True
    return False


def record_monitor(
    ctx: Context, run_id: str, w: Windows, out, n_ref: int, n_cur: int, text: list[MetricResult], params: dict, **result
) -> MonitorResult:
    """Log one monitor pass to its stage run (windows and `params`, the drift report, every figure)
    and return it as a MonitorResult (`result`: its other fields). The `monitor` flow and the
    evaluate flow's explicit windows share it, so both runs hold the same artifacts."""
    ctx.tracker.log_params(run_id, {**w.as_dict(), "n_reference": n_ref, "n_current": n_cur, **params})
    if _html_due(ctx, out.drift.metrics):
        ctx.tracker.log_text(run_id, out.drift.html, "drift_report.html")
    ctx.tracker.log_dict(run_id, out.drift.summary, "drift_summary.json")
    ctx.tracker.log_metric_results(run_id, out.current + out.bias + out.drift.metrics + text, "metrics_current.json")
    ctx.tracker.log_dict(run_id, [m.model_dump(mode="json") for m in out.reference], "metrics_reference.json")
    if result.get("judges"):
        ctx.tracker.log_metric_results(run_id, judge_figures(result["judges"], result["judged"]), "metrics_judged.json")
    if result.get("reference_judges"):  # an artifact only: as metrics they would share the current window's keys
        ref = judge_figures(result["reference_judges"], result["reference_judged"])
        ctx.tracker.log_dict(run_id, [m.model_dump(mode="json") for m in ref], "metrics_judged_reference.json")
    return MonitorResult(
        windows=w.as_dict(),
        n_reference=n_ref,
        n_current=n_cur,
        current=out.current,
        reference=out.reference,
        drift=out.drift.metrics,
        text=text,
        bias=out.bias,
        run_id=run_id,
        **result,
    )
