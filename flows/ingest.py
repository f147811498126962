"""`ingest` flow: read the configured sources (files, SQL) into the store, quarantining bad rows.

>>> ingest(StageParams(config="driftloop.yaml"))
{'read': 2800, 'accepted': 2800, 'duplicates': 0, 'quarantined': 0, 'redacted': {...}, ...}
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, task

from driftloop.alerts.events import quarantine_alert, quarantined_share
from driftloop.core.errors import ConfigError
from driftloop.ingest import check_sources, ingest_config, source_files
from flows.common import StageParams, alert, context, log, stage_run


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a failed read (a database away for a moment), never a wrong config (a mapping typo): it fails alike."""
    return not isinstance(state.data, ConfigError)


@task(name="ingest-sources", retries=2, retry_delay_seconds=5, retry_condition_fn=_worth_retrying)
def ingest_task(params: StageParams) -> dict[str, Any]:
    ctx = context(params)
    files = source_files(ctx.cfg)
    log().info("ingesting %d file(s) and %d sql source(s)", len(files), sum(s.kind == "sql" for s in ctx.cfg.sources))
    rep = ingest_config(ctx.cfg, ctx.store, on_source=lambda d: log().info("ingest: reading %s", d))
    for err in rep.errors:
        log().warning("ingest: %s", err)
    return {
        "read": rep.read,
        "accepted": rep.accepted,
        "duplicates": rep.duplicates,
        "quarantined": rep.quarantined,
        "reasons": dict(rep.reasons),
        "redacted": dict(rep.redacted),
        "files": len(files),
        "errors": rep.errors,
    }


@flow(name="ingest")
def ingest(params: StageParams = StageParams()) -> dict[str, Any]:
    """Ingest every source; log read = accepted + duplicates + quarantined and redaction counts to MLflow."""
    # The sources are checked here rather than by config's check_files, which knows only file sources.
    ctx = context(params)
    check_sources(ctx.cfg, params.config or "driftloop.yaml")
    t0 = time.monotonic()
    try:
        summary = ingest_task(params)
    except BaseException:
        with stage_run(ctx, "ingest", params.parent_run_id):
            raise  # the stage's MLflow run, marked FAILED
    if summary["read"] == 0 and params.parent_run_id is None:
        # A scheduled ingest that found nothing new (most of them): no MLflow run of its own.
        summary["total_events"] = ctx.store.count_events()
        log().info("ingest: nothing new to read (%d events stored); no MLflow run", summary["total_events"])
        return summary
    with stage_run(ctx, "ingest", params.parent_run_id) as run_id:
        metrics = {f"ingest/{k}": v for k, v in summary.items() if isinstance(v, int)}
        metrics["ingest/seconds"] = time.monotonic() - t0
        metrics.update({f"ingest/redacted_{k}": n for k, n in summary["redacted"].items()})
        metrics["ingest/balanced"] = float(
            summary["read"] == summary["accepted"] + summary["duplicates"] + summary["quarantined"]
        )
        ctx.tracker.log_metrics(run_id, metrics)
        if summary["reasons"]:
            # Reason keys are `field: problem`, never values, so no PII reaches MLflow.
            ctx.tracker.log_dict(run_id, summary["reasons"], "quarantine_reasons.json")
        summary["total_events"] = ctx.store.count_events()
        if quarantined_share(summary) > ctx.cfg.alerts.quarantine_threshold:
            alert(
                ctx,
                "ingest.quarantine",
                run_id=run_id,
                **quarantine_alert(summary, ctx.cfg.alerts.quarantine_threshold),
            )
        log().info(
            "ingest: read %(read)d = accepted %(accepted)d + duplicates %(duplicates)d + quarantined %(quarantined)d",
            summary,
        )
        return summary
