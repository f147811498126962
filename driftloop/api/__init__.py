"""The HTTP API: a FastAPI app factory; each area adds its router beside `feedback`.

    >>> app = create_app(load_config("driftloop.yaml"))
    >>> uvicorn.run(app, host="127.0.0.1", port=8080)

Every route that changes state depends on `auth.require_token` (bearer token
from `api.token` or `DRIFTLOOP_API__TOKEN`). The app opens one `Store` (SQLite
or PostgreSQL, migrated) and closes it on shutdown.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI

from driftloop.errors import ConfigError
from driftloop.ingest.pipeline import RowParser
from driftloop.ingest.redact import Redactor
from driftloop.store import Store


def create_app(cfg: Any, store: Store | None = None) -> FastAPI:
    """The API for config `cfg`, storing into `store` (default: a migrated store at `cfg.store_url`).

    Raises ConfigError when no bearer token is configured: the server never
    runs open.
    """
    if cfg.api.token is None or not cfg.api.token.get_secret_value().strip():
        raise ConfigError("api.token: not set; set it in driftloop.yaml or in DRIFTLOOP_API__TOKEN")
    owned = store is None
    if store is None:
        cfg.state_path.mkdir(parents=True, exist_ok=True)
        store = Store(cfg.store_url)
        store.migrate()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            store.close()

    from driftloop.api import feedback

    app = FastAPI(title="driftloop", lifespan=lifespan)
    app.state.cfg = cfg
    app.state.store = store
    app.state.token = cfg.api.token.get_secret_value().strip().encode()
    app.state.parser = RowParser(cfg.api.mapping, Redactor.from_config(cfg.redaction))
    app.include_router(feedback.router)
    return app
