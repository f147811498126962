"""The `retention:` section: how long the state folder keeps what it can do without, how often
the monitor stores Evidently's HTML report and workspace snapshot, and whether each cycle
stores the loop timeline page."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from driftloop.core.config_base import _Section


class RetentionConfig(_Section):
    """What `driftloop gc` removes, and how often a monitor run stores its HTML drift report."""

    older_than_days: float = Field(
        default=30,
        gt=0,
        description="`driftloop gc` (without --older-than) removes what is older than this many days: runs' HTML reports and retrain job records (`job/`), LoggedModels no registry version points at, and the local retrain job folders. A registered version's files, run summaries, metrics and the registry are never removed.",
    )
    drift_html: Literal["always", "on_drift_or_daily"] = Field(
        default="always",
        description="When a monitor run stores Evidently's HTML report (`drift_report.html`, the largest artifact a cycle writes): every run, or only where a drift test failed, and otherwise at most once a day. The drift summary and every figure are stored either way.",
    )
    workspace_snapshots: Literal["every_run", "on_drift_or_daily"] = Field(
        default="every_run",
        description="When a monitor run saves its Evidently snapshot to the workspace (`monitor.workspace`; about 350 kB each): every run, or only where a drift test failed, and otherwise at most once a day. Fewer snapshots mean fewer points in the Evidently dashboard's series; MLflow keeps every run's figures either way.",
    )
    timeline: Literal["every_cycle", "on_demand"] = Field(
        default="every_cycle",
        description="Whether each loop cycle stores the loop timeline page (`timeline.html`, about 4.5 MB: it inlines plotly so it works offline) on its run, or only `driftloop dashboard` builds it, on demand, from what MLflow recorded.",
    )
