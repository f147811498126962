"""`driftloop gc`: remove what the state folder can do without, older than a cutoff.

MLflow's share (`driftloop.tracking.gc`): old runs' HTML reports and retrain job records, and
LoggedModels no registry version points at. The state folder's share: retrain job folders
(`<state_dir>/retrain/<job>`: the curated data file and spec; the manifest and digest stay
in MLflow). Never a registered version's files, a run, a metric, a summary, the registry or
the feedback store.

    >>> report = collect_garbage(cfg, tracker, older_than_days=30, dry_run=True)
    >>> report.freed_bytes
    52428800
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from driftloop.core.config import Config
from driftloop.core.errors import InputError
from driftloop.tracking import Tracker
from driftloop.tracking.gc import collect

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dh])\s*$")


class Removed(BaseModel):
    kind: str
    path: str
    bytes: int


class GcReport(BaseModel):
    cutoff: str = Field(description="UTC time before which things were removed.")
    dry_run: bool
    removed: list[Removed] = Field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return sum(r.bytes for r in self.removed)


def parse_age(text: str) -> float:
    """`30d` or `12h` -> days; InputError naming the value otherwise."""
    m = _AGE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise InputError(f"--older-than: {text!r} is not an age like 30d or 12h")
    return float(m.group(1)) / (24 if m.group(2) == "h" else 1)


def _size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def collect_garbage(
    cfg: Config, tracker: Tracker, older_than_days: float, dry_run: bool, progress: Callable[[str], None] = print
) -> GcReport:
    """Remove (or list, with `dry_run`) what is older than `older_than_days`."""
    cutoff = time.time() - older_than_days * 86400  # days -> seconds
    report = GcReport(cutoff=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cutoff)), dry_run=dry_run)
    for r in collect(tracker, int(cutoff * 1000), dry_run, progress):
        report.removed.append(Removed(kind=r.kind, path=r.path, bytes=r.bytes))
    jobs = cfg.state_path / "retrain"
    for job in sorted(jobs.iterdir()) if jobs.is_dir() else []:
        if job.is_dir() and job.stat().st_mtime < cutoff:
            report.removed.append(Removed(kind="retrain job folder", path=str(job), bytes=_size(job)))
            if not dry_run:
                shutil.rmtree(job, ignore_errors=True)
    return report
