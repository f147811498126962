"""What every flow shares: its parameters model, and the context (config, store, tracker).

Flows receive a config path (never live objects), so any of them can run as a
Prefect deployment on a worker that has only the YAML file.

    >>> ctx = context(StageParams(config="driftloop.yaml"))
    >>> ctx.store.count_events()
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from pydantic import BaseModel, ConfigDict, Field

from driftloop import tags as T
from driftloop.config import Config, load_config
from driftloop.store import Store
from driftloop.tracking import Tracker


class StageParams(BaseModel):
    """Parameters shared by the stage flows."""

    model_config = ConfigDict(extra="forbid")
    config: str | None = Field(default=None, description="Path of driftloop.yaml; default $DRIFTLOOP_CONFIG or ./driftloop.yaml.")
    parent_run_id: str | None = Field(default=None, description="MLflow run to nest this stage's run under.")


@dataclass
class Context:
    cfg: Config
    store: Store
    tracker: Tracker


_CACHE: dict[tuple, Context] = {}


def context(params: StageParams, check_files: bool = False) -> Context:
    """Config, migrated store and tracker for these parameters (built once per process)."""
    cfg = load_config(params.config, check_files=check_files)
    key = (str(cfg.base_dir), cfg.store_url, cfg.tracking_uri, cfg.model_dump_json())
    if key not in _CACHE:
        cfg.state_path.mkdir(parents=True, exist_ok=True)
        store = Store(cfg.store_url)
        store.migrate()
        _CACHE[key] = Context(cfg, store, Tracker.from_config(cfg))
    return _CACHE[key]


def log():
    """Prefect's run logger inside a flow or task; a plain logger elsewhere."""
    try:
        return get_run_logger()
    except MissingContextError:
        import logging

        return logging.getLogger("driftloop")


@contextmanager
def stage_run(ctx: Context, name: str, parent: str | None) -> Iterator[str]:
    """An MLflow run for one stage, nested under `parent`; marked FAILED if the body raises.

    Logs the stage's wall time as `stage_seconds`.
    """
    run_id = ctx.tracker.start_run(name, parent=parent, tags={T.STAGE: name})
    t0 = time.monotonic()
    try:
        yield run_id
    except BaseException:
        ctx.tracker.end_run(run_id, failed=True)
        raise
    ctx.tracker.log_metrics(run_id, {"stage_seconds": time.monotonic() - t0})
    ctx.tracker.end_run(run_id)


def alert(ctx: Context, type: str, **fields) -> list:
    """Send an alert event of `type` to the configured webhooks (see driftloop.alerts); fields as in
    `make_event` (model_version, previous_version, reasons, run_id, cycle, data). Never raises: a
    failing webhook is logged in one line and dead-lettered, and the flow goes on."""
    from driftloop.alerts import send

    return send(ctx.cfg, ctx.store, type, logger=log(), experiment_id=ctx.tracker.experiment_id, **fields)
