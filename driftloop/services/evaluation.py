"""On-demand evaluation: what is asked for (model, suites, window) and what comes back.

Shared by the `evaluate` flow, `driftloop evaluate`, `POST /v1/evaluations` and the
MLflow webhook receiver, so every entry point validates a request the same way and
reads the same result. No Prefect here: the API validates without importing it.

    >>> parse_window("7d")
    WindowSpec(spec='7d', days=7.0, start=None, end=None)
    >>> parse_window("2025-01-01..2025-01-08").end
    datetime.datetime(2025, 1, 8, 0, 0, tzinfo=datetime.timezone.utc)
    >>> check_model_ref("./not-a-model")
    Traceback (most recent call last):
    driftloop.core.errors.InputError: model ./not-a-model: no such folder

Window syntax (`--window`, `window` in the API):
- `Nd` or `Nh` (e.g. `7d`, `24h`, `1.5d`): the current window is the last N days or
  hours, ending at the newest event; the reference is what `monitor.windows` says.
- `START..END` (ISO 8601 dates or datetimes, e.g. `2025-01-01..2025-01-08`): the current
  window is [START, END), END exclusive; a time without a zone is UTC. The reference is
  the pinned window (`reference: pinned`), the champion's window (`champion`), or the
  `reference_days` before START.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from driftloop.core.config import looks_like_path
from driftloop.core.errors import InputError
from driftloop.core.types import MetricResult

# Kinds of MLflow run status, as the API reports them.
STATUS = {"SCHEDULED": "queued", "RUNNING": "running", "FINISHED": "finished", "FAILED": "failed", "KILLED": "failed"}
KIND = "evaluation"  # value of the `driftloop.kind` tag on the parent run
RESULT_ARTIFACT = "evaluation.json"

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([dh])$")
_ALIAS = re.compile(r"^[A-Za-z][\w-]{0,254}$")


@dataclass(frozen=True)
class WindowSpec:
    """A parsed `--window`: a length in days (ending at the newest event) or a [start, end) range."""

    spec: str
    days: float | None = None
    start: datetime | None = None
    end: datetime | None = None


def _when(text: str, spec: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"window {spec!r}: {text.strip()!r} is not an ISO 8601 date or datetime") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def parse_window(spec: str | None) -> WindowSpec | None:
    """Parse a window spec (`7d`, `24h`, `2025-01-01..2025-01-08`); None or "" means the
    configured `monitor.windows`. A malformed spec is an InputError naming it."""
    if spec is None or not spec.strip():
        return None
    s = spec.strip()
    m = _SPAN.match(s)
    if m:
        n = float(m.group(1))
        if n <= 0:
            raise InputError(f"window {spec!r}: the length must be positive")
        return WindowSpec(s, days=n if m.group(2) == "d" else n / 24)
    if ".." in s:
        a, _, b = s.partition("..")
        start, end = _when(a, spec), _when(b, spec)
        if start >= end:
            raise InputError(f"window {spec!r}: the start must be before the end")
        return WindowSpec(s, start=start, end=end)
    raise InputError(f"window {spec!r}: expected Nd, Nh (e.g. 7d, 24h) or START..END (e.g. 2025-01-01..2025-01-08)")


def check_model_ref(ref: str) -> str:
    """Validate the form of a model reference without touching the registry: champion,
    challenger, another alias, a version number, or a local model folder (with config.json).
    Returns it stripped; an InputError names what is wrong."""
    ref = (ref or "").strip()
    if not ref:
        raise InputError("model: empty; give champion, challenger, a version number or a model folder")
    p = Path(ref).expanduser()
    if looks_like_path(ref) or p.exists():
        if not p.is_dir():
            raise InputError(f"model {ref}: no such folder")
        if not (p / "config.json").is_file():
            raise InputError(f"model {ref}: not a model folder (no config.json)")
        return ref
    if ref.isdigit() or _ALIAS.match(ref):
        return ref
    raise InputError(f"model {ref!r}: not an alias, a version number or a folder")


def check_registered(tracker: Any, ref: str) -> None:
    """For a registry reference (alias or version, not a folder), check with `tracker` that it
    exists; an InputError names the model and what is missing. Downloads nothing."""
    if is_model_folder(ref):
        return
    if ref.isdigit():
        if not tracker.version_exists(ref):
            raise InputError(f"model {ref!r}: version {ref} of {tracker.model_name!r} does not exist")
    elif tracker.alias_version(ref) is None:
        raise InputError(f"model {ref!r}: no such alias in registered model {tracker.model_name!r}")


def is_model_folder(ref: str) -> bool:
    """Whether a (checked) model reference names a local folder rather than the registry."""
    return Path(ref).expanduser().is_dir()


class EvaluationRequest(BaseModel):
    """What an on-demand evaluation is asked to do (the body of `POST /v1/evaluations`)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(
        default="champion", description="champion, challenger, a registry version number, or a local model folder."
    )
    suites: list[str] | None = Field(
        default=None, description="Benchmark suites to run; default: every configured suite."
    )
    window: str | None = Field(
        default=None, description="Feedback window: `Nd`, `Nh` or `START..END`; default: monitor.windows."
    )


class EvaluationResult(BaseModel):
    """What one on-demand evaluation found; logged verbatim as `evaluation.json` in its run."""

    run_id: str = Field(description="The parent MLflow run (tag driftloop.kind=evaluation).")
    model: str = Field(description="The model reference as asked for.")
    version: str = Field(default="", description="Registry version evaluated; empty for a local folder.")
    model_path: str = Field(default="", description="Local folder the benchmarks loaded.")
    window: str = Field(default="", description="The window spec as asked for; empty: monitor.windows.")
    suites: dict[str, list[MetricResult]] = Field(default_factory=dict, description="Benchmark metrics by suite.")
    monitor: dict[str, Any] = Field(
        default_factory=dict, description="Windows, event counts, drifted share and the monitor run id."
    )
    metrics: list[MetricResult] = Field(
        default_factory=list, description="Every figure: monitor quality, bias and drift, then benchmarks."
    )
    benchmark_run_id: str = ""
    link: str = Field(default="", description="Path of the run in the MLflow UI.")
