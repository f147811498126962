"""FastAPI dependencies of the routes: the one place that reads what `create_app` put in `app.state`.

A route declares what it needs as an annotated parameter and never looks at `request.app`:

    >>> @router.post("/v1/x", dependencies=[Depends(require_scope("ingest"))])
    ... async def x(cfg: ConfigDep, store: StoreDep) -> XResponse: ...

Tests and embedders may swap any of them with `app.dependency_overrides[get_store] = ...`.
The ones that only read `app.state` are `async def`: FastAPI runs a plain `def` dependency in
its thread pool, a hop that costs more than the lookup itself on every request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

if TYPE_CHECKING:
    from driftloop.app.api.evaluations import EvaluationRunner
    from driftloop.app.api.parsepool import ParsePool
    from driftloop.app.api.quarantine import QuarantineWatch
    from driftloop.app.api.writer import GroupWriter
    from driftloop.core.config import Config
    from driftloop.ingest.pipeline import RowParser
    from driftloop.store import Store
    from driftloop.tracking import Tracker


async def get_config(request: Request) -> Config:
    """The app's configuration."""
    return request.app.state.cfg


async def get_store(request: Request) -> Store:
    """The app's store (opened and migrated by `create_app`)."""
    return request.app.state.store


async def get_tokens(request: Request) -> list[tuple[bytes, frozenset[str]]]:
    """(token, scopes) of every configured bearer token."""
    return request.app.state.tokens


async def get_parser(request: Request) -> RowParser:
    """The feedback row parser (mapping, redaction, id namespace); fork it per request."""
    return request.app.state.parser


async def get_quarantine_watch(request: Request) -> QuarantineWatch:
    """The windows of quarantined feedback that may send `ingest.quarantine`."""
    return request.app.state.quarantine_watch


async def get_writer(request: Request) -> GroupWriter:
    """The single writer of the app's store: a route's writes join its next transaction (group commit)."""
    return request.app.state.writer


async def get_parse_pool(request: Request) -> ParsePool | None:
    """The OTLP parse worker processes (`api.traces.parse_workers`); None: parse in this process."""
    return request.app.state.parse_pool


async def get_runner(request: Request) -> EvaluationRunner:
    """The on-demand evaluation runner (in-process pool, or Prefect deployment runs)."""
    return request.app.state.evaluations


ConfigDep = Annotated["Config", Depends(get_config)]
StoreDep = Annotated["Store", Depends(get_store)]
TokensDep = Annotated[list[tuple[bytes, frozenset[str]]], Depends(get_tokens)]
ParserDep = Annotated["RowParser", Depends(get_parser)]
QuarantineWatchDep = Annotated["QuarantineWatch", Depends(get_quarantine_watch)]
WriterDep = Annotated["GroupWriter", Depends(get_writer)]
ParsePoolDep = Annotated["ParsePool | None", Depends(get_parse_pool)]
RunnerDep = Annotated["EvaluationRunner", Depends(get_runner)]


def get_tracker(runner: RunnerDep) -> Tracker:
    """The MLflow tracker, created on first use (the feedback routes never import MLflow)."""
    return runner.tracker


TrackerDep = Annotated["Tracker", Depends(get_tracker)]
