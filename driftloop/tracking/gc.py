"""MLflow's share of `driftloop gc`: old runs' HTML reports and retrain job records, and LoggedModels
that no registry version points at. Never a registered version's files, a run, a metric, a
summary or the registry itself.

    >>> found = collect(tracker, cutoff_ms, dry_run=True)
    >>> [(f.kind, f.path) for f in found][:1]
    [('run html', 'mlartifacts/1/0f3c.../artifacts/drift_report.html')]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from driftloop.tracking import Tracker

RUN_PATHS = ("job",)  # run artifact folders gc may remove (a retrain's job record: metrics, spec, adapter)
RUN_SUFFIXES = (".html",)  # run artifact files gc may remove (Evidently's drift report)


@dataclass(frozen=True)
class Removal:
    kind: str  # "run html", "run job", "unregistered model"
    path: str  # artifact URI or local path
    bytes: int


def _local(uri: str) -> Path | None:
    if uri.startswith("file://"):
        return Path(urlparse(uri).path)
    return None if "://" in uri else Path(uri)


def _size(p: Path | None) -> int:
    if p is None or not p.exists():
        return 0
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _protected(tr: Tracker) -> tuple[set[str], list[str]]:
    """Model ids and storage locations of every registry version (all of them, whatever their status)."""
    ids, places = set(), []
    for mv in tr.client.search_model_versions(f"name = '{tr.model_name}'"):
        if mv.source.startswith("models:/"):
            ids.add(mv.source.removeprefix("models:/").split("/")[0])
        places.append(tr.client.get_model_version_download_uri(tr.model_name, mv.version).rstrip("/"))
    return ids, places


def collect(tr: Tracker, cutoff_ms: int, dry_run: bool, progress: Callable[[str], None] = print) -> list[Removal]:
    """Remove (or with `dry_run`, list) what is older than `cutoff_ms` (ms since the epoch)."""
    from mlflow.entities import ViewType
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    ids, places = _protected(tr)

    def safe(uri: str) -> bool:
        uri = uri.rstrip("/")
        return not any(p == uri or p.startswith(uri + "/") or uri.startswith(p + "/") for p in places)

    out: list[Removal] = []
    runs = tr.client.search_runs(
        [tr.experiment_id], f"attributes.start_time < {int(cutoff_ms)}", run_view_type=ViewType.ALL, max_results=50_000
    )
    progress(f"gc: {len(runs)} runs older than the cutoff")
    for k, run in enumerate(runs, 1):
        base = run.info.artifact_uri.rstrip("/")
        repo = get_artifact_repository(base)
        for a in tr.client.list_artifacts(run.info.run_id):
            wanted = (a.is_dir and a.path in RUN_PATHS) or (not a.is_dir and a.path.endswith(RUN_SUFFIXES))
            uri = f"{base}/{a.path}"
            if not wanted or not safe(uri):
                continue
            out.append(Removal("run job" if a.is_dir else "run html", uri, _size(_local(uri)) or (a.file_size or 0)))
            if not dry_run:
                repo.delete_artifacts(a.path)
        if k % 100 == 0:
            progress(f"gc: {k}/{len(runs)} runs looked at")
    for lm in tr.client.search_logged_models([tr.experiment_id], max_results=50_000):
        if lm.model_id in ids or (lm.creation_timestamp or 0) >= cutoff_ms or not safe(lm.artifact_location):
            continue
        out.append(Removal("unregistered model", lm.artifact_location, _size(_local(lm.artifact_location))))
        if not dry_run:
            get_artifact_repository(lm.artifact_location).delete_artifacts()
            tr.client.delete_logged_model(lm.model_id)
    return out
