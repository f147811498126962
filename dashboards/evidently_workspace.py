"""The Evidently workspace that `evidently ui` shows: one project per driftloop project,
one snapshot per monitor run, and a dashboard of drift over time.

The workspace is a plain folder (`<state_dir>/evidently` by default); open it with
`evidently ui --workspace <state_dir>/evidently` and the project lists every monitor
run's drift report, stamped with the end of its current window.

    >>> ref = save_snapshot(Path(".driftloop/evidently"), "driftloop", out.snapshot,
    ...                     name="monitor 2025-01-08", timestamp=window_end,
    ...                     metadata={"mlflow_run_id": run_id})
    >>> ref.project_id, ref.snapshot_id
    ('0196...', '0196...')
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

DESCRIPTION = "driftloop monitor runs: Evidently drift of the current window against the reference"


@dataclass(frozen=True)
class SavedSnapshot:
    project_id: str
    snapshot_id: str
    workspace: str


def save_snapshot(workspace: Path, project: str, snapshot: Any, name: str, timestamp: datetime | None = None,
                  metadata: dict[str, str] | None = None, tags: list[str] | None = None) -> SavedSnapshot:
    """Add `snapshot` (an Evidently Snapshot) to project `project` of the workspace at `workspace`.

    The project is created, with its dashboard panels, the first time. `timestamp`
    (default: the snapshot's own) places the run on the dashboard's time axis; the
    metadata and tags are shown with the run in the UI.
    """
    from evidently.ui.workspace import Workspace

    workspace.mkdir(parents=True, exist_ok=True)
    ws = Workspace(str(workspace))
    found = [p for p in ws.search_project(project) if p.name == project]
    proj = found[0] if found else _create_project(ws, project)
    # Snapshot takes these only in Report.run(); the evaluator that ran it does not know the window.
    if timestamp is not None:
        snapshot._timestamp = timestamp.replace(tzinfo=None) if timestamp.tzinfo else timestamp
    snapshot._metadata.update({k: str(v) for k, v in (metadata or {}).items()})
    snapshot._tags.extend(t for t in (tags or []) if t not in snapshot._tags)
    ref = ws.add_run(proj.id, snapshot, include_data=False, name=name)
    return SavedSnapshot(str(proj.id), str(ref.id), str(workspace))


def _create_project(ws: Any, name: str) -> Any:
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import counter_panel, line_plot_panel

    proj = ws.create_project(name, description=DESCRIPTION)
    share = PanelMetric(legend="share of drifted columns", metric="DriftedColumnsCount", metric_labels={"value_type": "share"})
    count = PanelMetric(legend="drifted columns", metric="DriftedColumnsCount", metric_labels={"value_type": "count"})
    proj.dashboard.add_panel(counter_panel("Drifted columns, last run", [count], size="half"), tab="Drift")
    proj.dashboard.add_panel(line_plot_panel("Share of drifted columns over time", [share], size="half"), tab="Drift")
    return proj
