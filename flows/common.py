"""What every flow shares: its parameters model, and the context (config, store, tracker).

Flows receive a config path (never live objects), so any of them can run as a
Prefect deployment on a worker that has only the YAML file.

    >>> ctx = context(StageParams(config="driftloop.yaml"))
    >>> ctx.store.count_events()

Without a configured Prefect API a flow may also run as plain Python (`run_flow`,
`plain_calls`): its body, its tasks and its subflows in this thread, with no engine
and no temporary server, so a command answers in the time its work takes.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from driftloop.core import tags as T
from driftloop.core.config import Config, load_config
from driftloop.store import Store
from driftloop.tracking import Tracker


class StageParams(BaseModel):
    """Parameters shared by the stage flows."""

    model_config = ConfigDict(extra="forbid")
    config: str | None = Field(
        default=None, description="Path of driftloop.yaml; default $DRIFTLOOP_CONFIG or ./driftloop.yaml."
    )
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
    """Prefect's run logger inside a flow or task; a plain logger elsewhere.

    Prefect is asked only where it is loaded: a process that never imported it has no run context.
    """
    if "prefect" in sys.modules and not _PLAIN.get():
        from prefect import get_run_logger
        from prefect.exceptions import MissingContextError

        try:
            return get_run_logger()
        except MissingContextError:
            pass
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


# ------------------------------------------------------------------ flows without Prefect's engine

_PLAIN: ContextVar[bool] = ContextVar("driftloop_plain_calls", default=False)
R = TypeVar("R")


def prefect_api_url() -> str | None:
    """The Prefect API this process reports flow runs to, or None where none is configured.

    PREFECT_API_URL in the environment answers at no cost. Prefect's own settings are read only
    where they may name an API: Prefect is already loaded (its test harness sets the API in its
    settings, not in the environment), or a settings source exists (the profiles file,
    prefect.toml, a .env or a pyproject.toml [tool.prefect] table naming it). Importing
    Prefect's settings takes more than a second, longer than a light command itself.
    """
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    if "prefect.settings" not in sys.modules and not _prefect_settings_files():
        return None
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def _prefect_settings_files() -> bool:
    """Whether a file Prefect reads its settings from exists and may name an API."""
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    profiles = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    cwd = Path.cwd()
    candidates = [
        (profiles, "PREFECT_API_URL"),
        (cwd / "prefect.toml", ""),
        (cwd / ".env", "PREFECT_API_URL"),
        (cwd / "pyproject.toml", "tool.prefect"),
    ]
    for path, needle in candidates:
        try:
            if path.is_file() and needle in path.read_text(encoding="utf-8", errors="replace"):
                return True
        except OSError:
            continue
    return False


def use_engine(cfg: Config | None = None) -> bool:
    """Whether flows started here run on Prefect's engine: where a Prefect API is configured
    (each run is then recorded there), or where `runner.kind` spreads benchmark suites over
    Dask (prefect-dask's task runner runs them through the engine). Elsewhere a flow is plain
    Python: the engine would first start a temporary server (10-16 s) to record runs in a local
    database nobody is looking at; MLflow keeps the record of every stage either way."""
    return prefect_api_url() is not None or (cfg is not None and cfg.runner.kind != "serial")


def run_flow(flow: Callable[..., R], *args: Any, engine: bool | None = None, **kwargs: Any) -> R:
    """Call `flow` on Prefect's engine where `engine` (default: `use_engine()`), else as plain
    Python under `plain_calls`. Its result and its errors are the same either way."""
    if use_engine() if engine is None else engine:
        if prefect_api_url() is None:
            from flows.ephemeral import install

            install()  # the temporary server the engine starts then dies with this process
        return flow(*args, **kwargs)
    with plain_calls():
        return flow(*args, **kwargs)


@contextmanager
def plain_calls(level: int = logging.INFO) -> Iterator[None]:
    """Within, calling a Prefect flow or task runs its function in this thread as plain Python:
    no flow or task run, no API, no temporary server.

    A task's retries are kept (`retries`, `retry_delay_seconds`, `retry_condition_fn`, as the
    engine applies them); result caching and run records are not. Other threads, `.submit()`
    and calls with `return_state` or `wait_for` go to the engine as usual. Progress that the
    flows log is shown from `level` up, as on Prefect's console.
    """
    _install_plain_calls()
    logger = logging.getLogger("driftloop")
    handler = None
    # Where the root logger has handlers (Prefect's console handler, once Prefect is imported;
    # pytest's capture), the records reach them; elsewhere they would vanish below WARNING.
    if not logging.getLogger().handlers and not any(isinstance(h, _ProgressHandler) for h in logger.handlers):
        handler = _ProgressHandler()
        logger.addHandler(handler)
    before = logger.level
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    token = _PLAIN.set(True)
    try:
        yield
    finally:
        _PLAIN.reset(token)
        logger.setLevel(before)
        if handler is not None:
            logger.removeHandler(handler)


class _ProgressHandler(logging.StreamHandler):
    """stderr, one line per record, in the shape of Prefect's console lines."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(
            logging.Formatter("%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s", "%H:%M:%S")
        )


def _install_plain_calls() -> None:
    """Make `Task.__call__` and `Flow.__call__` honour `plain_calls` (once per process).

    The flows call their tasks and subflows as functions; wrapping the call, rather than
    rewriting every call site, keeps one body per flow for both ways of running it.
    """
    from prefect import Flow, Task

    for cls in (Task, Flow):
        if cls not in _PLAIN_AWARE:
            cls.__call__ = _plain_aware(cls.__call__)
            _PLAIN_AWARE.add(cls)


_PLAIN_AWARE: set[type] = set()


def _plain_aware(call: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call)
    def __call__(self, *args: Any, return_state: bool = False, wait_for: Any = None, **kwargs: Any) -> Any:
        if _PLAIN.get() and not return_state and wait_for is None:
            return _call_plain(self, args, kwargs)
        return call(self, *args, return_state=return_state, wait_for=wait_for, **kwargs)

    return __call__


def _call_plain(obj: Any, args: tuple, kwargs: dict) -> Any:
    """`obj.fn(*args, **kwargs)`, retried on an exception as Prefect retries a task."""
    retries = getattr(obj, "retries", 0) or 0
    attempt = 0
    while True:
        try:
            return obj.fn(*args, **kwargs)
        except Exception as e:
            if attempt >= retries or not _worth_retry(obj, e):
                raise
            delay = obj.retry_delay_seconds or 0
            if isinstance(delay, (list, tuple)):
                delay = delay[min(attempt, len(delay) - 1)]
            attempt += 1
            log().warning("task %s failed with %r; retry %d/%d in %g s", obj.name, e, attempt, retries, delay)
            time.sleep(delay)


def _worth_retry(task: Any, exc: Exception) -> bool:
    """The task's `retry_condition_fn` on a Failed state holding `exc`, as the engine calls it
    (without a task run: there is none)."""
    condition = getattr(task, "retry_condition_fn", None)
    if not callable(condition):
        return True
    from prefect.states import Failed

    return bool(condition(task, None, Failed(data=exc, message=f"Task run encountered unexpected exception: {exc!r}")))
