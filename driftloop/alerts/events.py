"""The alert event: one typed record of something the loop did, the same for every receiver.

An event says what happened (`type`), to which model version, why (`reasons`,
the decision's own sentences with numbers), and where the evidence is (the
MLflow run and a link to it). `payloads.py` renders it for each format.

    >>> ev = make_event(cfg, "candidate.promoted", model_version="2", previous_version="1",
    ...                 reasons=["golden: +0.31 [0.22, 0.40]"], run_id=run, experiment_id="1")
    >>> ev.type, ev.model.version
    ('candidate.promoted', '2')
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field

from driftloop.core.config import AlertEventType, Config

SCHEMA_VERSION = 1
EVENT_TYPES: tuple[str, ...] = get_args(AlertEventType)

# One line per type: the headline receivers show (Slack's `text`, the JSON `summary`).
TITLES = {
    "regression.detected": "Regression detected",
    "retrain.started": "Retrain started",
    "retrain.finished": "Retrain finished",
    "retrain.failed": "Retrain failed",
    "retrain.skipped": "Regression with nothing to train on",
    "candidate.promoted": "Candidate promoted",
    "candidate.rejected": "Candidate rejected",
    "champion.rolled_back": "Champion rolled back",
    "ingest.quarantine": "Ingest quarantine over threshold",
    "alert.test": "Test alert",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelRef(_Model):
    name: str = Field(description="Registered model name in MLflow.")
    version: str | None = Field(
        default=None, description="The version the event is about (the candidate, the new or restored champion)."
    )
    previous_version: str | None = Field(
        default=None, description="The version it replaced or was compared with (the champion before)."
    )


class MlflowRef(_Model):
    run_id: str | None = Field(
        default=None, description="MLflow run holding the evidence (the cycle's run for loop events)."
    )
    url: str | None = Field(
        default=None, description="Link to that run in the MLflow UI; null when no UI address is known."
    )


class AlertEvent(_Model):
    """One alert, exactly as the generic JSON format sends it (schema `version` 1)."""

    version: int = Field(default=SCHEMA_VERSION, description="Schema version of this payload.")
    id: str = Field(default_factory=lambda: f"evt_{uuid.uuid4().hex}", description="Unique id; receivers dedupe on it.")
    type: AlertEventType
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC), description="When it happened (UTC).")
    project: str
    model: ModelRef
    summary: str = Field(description="One line for humans.")
    reasons: list[str] = Field(default_factory=list, description="The decision's reasons, sentences with numbers.")
    cycle: str | None = Field(default=None, description="Id of the loop cycle, where the event comes from one.")
    mlflow: MlflowRef = MlflowRef()
    data: dict[str, Any] = Field(default_factory=dict, description="Type-specific figures, e.g. quarantine counts.")


def ui_url(cfg: Config) -> str | None:
    """The MLflow UI address: `alerts.mlflow_ui_url`, else an http(s) tracking URI, else None."""
    url = cfg.alerts.mlflow_ui_url or (
        cfg.tracking_uri if cfg.tracking_uri.startswith(("http://", "https://")) else None
    )
    return url.rstrip("/") if url else None


def run_link(cfg: Config, experiment_id: str | None, run_id: str | None) -> str | None:
    """Link to a run in the MLflow UI (the UI's hash route), or None without a UI address or run."""
    base = ui_url(cfg)
    if not base or not run_id or not experiment_id:
        return None
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def make_event(
    cfg: Config,
    type: str,
    *,
    model_version: str | None = None,
    previous_version: str | None = None,
    reasons: list[str] | tuple[str, ...] = (),
    run_id: str | None = None,
    experiment_id: str | None = None,
    cycle: str | None = None,
    summary: str | None = None,
    data: dict[str, Any] | None = None,
) -> AlertEvent:
    """Build an event for this config's project and registered model; `summary` defaults to a headline
    naming the type and version, and the run link is derived from the config (see `run_link`)."""
    title = TITLES.get(type, type)
    if summary is None:
        summary = f"{title}: {cfg.project}" + (
            f", {cfg.tracking.registered_model} v{model_version}" if model_version else ""
        )
    return AlertEvent(
        type=type,
        project=cfg.project,
        summary=summary,
        reasons=list(reasons),
        cycle=cycle,
        data=dict(data or {}),
        model=ModelRef(name=cfg.tracking.registered_model, version=model_version, previous_version=previous_version),
        mlflow=MlflowRef(run_id=run_id, url=run_link(cfg, experiment_id, run_id)),
    )


def quarantined_share(summary: dict[str, Any]) -> float:
    """Quarantined / (accepted + quarantined) of this ingestion; duplicates count in neither."""
    return summary["quarantined"] / max(1, summary["accepted"] + summary["quarantined"])


def quarantine_alert(summary: dict[str, Any], threshold: float) -> dict[str, Any]:
    """Reasons and figures of an `ingest.quarantine` alert: the share against the threshold, then the
    commonest reasons (`field: problem`, never values, so no PII leaves in an alert)."""
    share = quarantined_share(summary)
    head = (
        f"{summary['quarantined']} of {summary['accepted'] + summary['quarantined']} rows quarantined "
        f"({share:.1%} > alerts.quarantine_threshold {threshold:.1%})"
    )
    top = sorted(summary["reasons"].items(), key=lambda kv: -kv[1])[:5]
    data = {k: summary[k] for k in ("read", "accepted", "duplicates", "quarantined")}
    return {
        "reasons": [head] + [f"{reason}: {n} row(s)" for reason, n in top],
        "data": data | {"quarantined_share": round(share, 4)},
    }
