"""The `retention:` section: how long the state folder keeps what it can do without, and how
often the monitor stores Evidently's HTML report."""

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
