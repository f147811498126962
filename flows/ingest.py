"""`ingest` flow: read the configured sources into the store (quarantining bad rows).

    >>> ingest(StageParams(config="driftloop.yaml"))
    {'read': 2800, 'accepted': 2800, 'duplicates': 0, 'quarantined': 0, ...}
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from driftloop.ingest import ingest_files
from flows.common import StageParams, context, log, stage_run


@task(name="ingest-files", retries=2, retry_delay_seconds=5)
def ingest_task(params: StageParams) -> dict[str, Any]:
    ctx = context(params)
    files = ctx.cfg.source_files()
    log().info("ingesting %d file(s)", len(files))
    rep = ingest_files(ctx.store, files)
    return {"read": rep.read, "accepted": rep.accepted, "duplicates": rep.duplicates,
            "quarantined": rep.quarantined, "reasons": dict(rep.reasons), "files": len(files)}


@flow(name="ingest")
def ingest(params: StageParams = StageParams()) -> dict[str, Any]:
    """Ingest every source file; log read = accepted + duplicates + quarantined to MLflow."""
    ctx = context(params, check_files=True)
    with stage_run(ctx, "ingest", params.parent_run_id) as run_id:
        summary = ingest_task(params)
        ctx.tracker.log_metrics(run_id, {f"ingest/{k}": v for k, v in summary.items() if isinstance(v, int)})
        if summary["reasons"]:
            ctx.tracker.log_dict(run_id, summary["reasons"], "quarantine_reasons.json")
        summary["total_events"] = ctx.store.count_events()
        log().info("ingest: read %(read)d, accepted %(accepted)d, duplicates %(duplicates)d, "
                   "quarantined %(quarantined)d", summary)
        return summary
