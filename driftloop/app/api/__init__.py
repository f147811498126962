"""The HTTP API: a FastAPI app factory; each area adds its router beside `feedback`.

    >>> app = create_app(load_config("driftloop.yaml"), config_path="driftloop.yaml")
    >>> uvicorn.run(app, host="127.0.0.1", port=8080)

Routes: `POST /v1/feedback`, `POST /v1/traces` (OTLP/HTTP), `POST /v1/evaluations`, `GET /v1/evaluations/{id}` and
`POST /v1/hooks/mlflow` (MLflow registry webhooks, verified by their signature).
Every other route depends on `auth.require_scope` (a bearer token from `api.token` or
`DRIFTLOOP_API__TOKEN`, which holds every scope, or one of `api.tokens` with its scopes:
`ingest` for feedback and traces, `evaluate` for evaluations). The docs routes exist only with
`api.docs: true`; the schema there names every route's request and response model. The app
opens one `Store` (SQLite or PostgreSQL, migrated) and closes it on shutdown; evaluations run
in a bounded thread pool, or as Prefect deployment runs where PREFECT_API_URL is set (see
`api.evaluations`), and MLflow is imported only when the first one is asked for. Routes get
what the app holds through the dependencies of `api.deps`, never from `request.app.state`.
Feedback requests add up into windows that may send `ingest.quarantine`
(`api.quarantine`). Feedback and trace writes go through one writer thread that commits
the writes of all requests waiting in one transaction, answering each after the commit
(`api.writer`); OTLP bodies may be decoded and mapped in worker processes
(`api.parsepool`, `api.traces.parse_workers`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from driftloop.app.api.auth import configured_tokens
from driftloop.app.api.bodies import add_body_schemas
from driftloop.app.api.limits import ClientLimits
from driftloop.app.api.parsepool import ParsePool
from driftloop.app.api.quarantine import QuarantineWatch
from driftloop.app.api.writer import GroupWriter
from driftloop.ingest.pipeline import RowParser
from driftloop.ingest.redact import Redactor
from driftloop.store import Store


def create_app(cfg: Any, store: Store | None = None, config_path: str | Path | None = None) -> FastAPI:
    """The API for config `cfg`, storing into `store` (default: a migrated store at `cfg.store_url`).

    `config_path` is the file `cfg` came from, which on-demand evaluations load (default:
    $DRIFTLOOP_CONFIG, else `driftloop.yaml` in the config's folder where it exists).
    Raises ConfigError when no bearer token is configured: the server never runs open.
    """
    tokens = configured_tokens(cfg)
    owned = store is None
    if store is None:
        cfg.state_path.mkdir(parents=True, exist_ok=True)
        store = Store(cfg.store_url)
        store.migrate()

    from driftloop.app.api import evaluations, feedback, mlflow_hooks, traces

    if config_path is None:
        default = cfg.base_dir / "driftloop.yaml"
        config_path = os.environ.get("DRIFTLOOP_CONFIG") or (str(default) if default.exists() else None)
    runner = evaluations.EvaluationRunner(cfg, str(config_path) if config_path else None)
    watch = QuarantineWatch(cfg, store)
    writer = GroupWriter(store)
    workers = cfg.api.traces.parse_workers
    pool = ParsePool(cfg, store.url, workers) if workers else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        watch.start()
        runner.start()
        if pool is not None:
            await pool.start()
        yield
        if pool is not None:
            pool.stop()
        writer.stop()  # the writes of requests in flight are committed before the store closes
        watch.stop()
        runner.shutdown()
        if owned:
            store.close()

    # The docs routes describe every route and field: only where the config asks for them.
    docs = {} if cfg.api.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="driftloop", lifespan=lifespan, **docs)
    app.state.cfg = cfg
    app.state.store = store
    app.state.tokens = tokens
    app.state.parser = RowParser(
        cfg.api.mapping, Redactor.from_config(cfg.redaction), id_namespace=cfg.api.id_namespace
    )
    app.state.evaluations = runner
    app.state.quarantine_watch = watch
    app.state.writer = writer
    app.state.parse_pool = pool
    # Outermost: a locked-out address or a stalled body is answered before any route runs.
    app.add_middleware(ClientLimits, limits=cfg.api.limits)
    app.include_router(feedback.router)
    app.include_router(traces.router)
    app.include_router(evaluations.router)
    app.include_router(mlflow_hooks.router)
    if cfg.api.docs:
        openapi = app.openapi

        def openapi_with_bodies() -> dict[str, Any]:
            # The bodies that routes read themselves (bounded, depth-limited) are described by models
            # FastAPI never sees as parameters: their schemas join the components here.
            if app.openapi_schema is None:
                app.openapi_schema = add_body_schemas(openapi())
            return app.openapi_schema

        app.openapi = openapi_with_bodies  # type: ignore[method-assign]
    return app
