"""Ingest every source a config names (files, then SQL and MLflow traces) with one redactor, into one report.

>>> report = ingest_config(cfg, store)
>>> report.balanced, dict(report.redacted)
(True, {'email': 3})
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from typing import Any

from driftloop.core.errors import ConfigError
from driftloop.ingest.files import ingest_files, source_files
from driftloop.ingest.mlflow_traces import ingest_mlflow_traces
from driftloop.ingest.pipeline import IngestReport, Progress
from driftloop.ingest.redact import Redactor
from driftloop.ingest.sql import ingest_sql
from driftloop.store import Store


def check_sources(cfg: Any, origin: str = "driftloop.yaml") -> None:
    """Raise ConfigError naming the first file source whose glob matches no file."""
    for i, s in enumerate(cfg.sources):
        if s.kind == "files" and not glob.glob(str(cfg.path(s.path))):
            raise ConfigError(f"{origin}: sources.{i}.path: no file matches {cfg.path(s.path)}")


def ingest_config(
    cfg: Any, store: Store, progress: Progress | None = None, on_source: Callable[[str], None] | None = None
) -> IngestReport:
    """Ingest all of `cfg.sources` into `store`, redacting per `cfg.redaction`; return the combined report.

    `on_source(description)` is called before each source starts (for progress
    lines); `progress(done, total)` is passed to the file sources (bytes).
    """
    redactor = Redactor.from_config(cfg.redaction)
    report = IngestReport()
    files = source_files(cfg)
    if files:
        if on_source:
            on_source(f"{len(files)} file(s)")
        report.merge(ingest_files(store, files, progress=progress, redactor=redactor))
    for src in cfg.sources:
        if src.kind == "sql":
            if on_source:
                on_source(f"sql {src.table or 'query'}")
            report.merge(ingest_sql(store, src, redactor=redactor))
        elif src.kind == "mlflow_traces":
            if on_source:
                on_source(f"mlflow traces of {src.experiment}")
            report.merge(ingest_mlflow_traces(store, src, cfg.tracking_uri, redactor=redactor))
    return report
