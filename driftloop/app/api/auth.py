"""Bearer-token authentication with scopes, shared by every router of the API.

`api.token` holds every scope; each of `api.tokens` holds the scopes it
lists, so a client that only posts feedback (`ingest`) cannot start
evaluations (`evaluate`). `admin` holds every scope.

    >>> @router.post("/v1/x", dependencies=[Depends(require_scope("ingest"))])
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from driftloop.app.api.deps import TokensDep
from driftloop.core.errors import ConfigError

SCOPES = ("ingest", "evaluate", "admin")


def configured_tokens(cfg: Any) -> list[tuple[bytes, frozenset[str]]]:
    """(token, scopes) of every configured token; ConfigError names one that is unset or too short.

    Raises ConfigError when there is none: the server never runs open.
    """
    from driftloop.core.config_ingest import MIN_TOKEN_CHARS

    out: list[tuple[bytes, frozenset[str]]] = []
    if cfg.api.token is not None and cfg.api.token.get_secret_value().strip():
        out.append((cfg.api.token.get_secret_value().strip().encode(), frozenset(SCOPES)))
    for i, t in enumerate(cfg.api.tokens):
        if t.token_env is not None:
            value, where = os.environ.get(t.token_env, ""), f"environment variable {t.token_env}"
        else:
            path = cfg.path(t.token_file)
            try:
                value = Path(path).read_text(encoding="utf-8")
            except OSError:
                raise ConfigError(f"api.tokens.{i}.token_file: cannot read {path}") from None
            where = f"file {path}"
        value = value.strip()
        if len(value) < MIN_TOKEN_CHARS:
            raise ConfigError(f"api.tokens.{i}: {where} is unset or shorter than {MIN_TOKEN_CHARS} characters")
        scopes = frozenset(SCOPES) if "admin" in t.scopes else frozenset(t.scopes)
        out.append((value.encode(), scopes))
    if not out:
        raise ConfigError(
            "api.token: not set; set it in driftloop.yaml or in DRIFTLOOP_API__TOKEN (or give api.tokens)"
        )
    return out


# Declares the bearer scheme in OpenAPI; never refuses by itself (token_scopes does, with its own messages).
bearer = HTTPBearer(auto_error=False, description="A token of `api.token` or `api.tokens`.")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def token_scopes(request: Request, tokens: TokensDep, _scheme: BearerDep) -> frozenset[str]:
    """A dependency: the scopes of the request's bearer token; 401 unless it carries a configured one.

    `async` though it never awaits: FastAPI runs it on the event loop instead of its thread pool.

    Every configured token is compared, each in constant time, so neither a
    token nor which one matched can be learnt from response times.
    """
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    given_b = given.strip().encode("utf-8", "replace")
    found: frozenset[str] | None = None
    for token, scopes in tokens:
        if hmac.compare_digest(given_b, token) and found is None:
            found = scopes
    if scheme.lower() != "bearer" or found is None:
        raise HTTPException(
            status_code=401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return found


ScopesDep = Annotated[frozenset[str], Depends(token_scopes)]


def require_scope(scope: str) -> Callable[..., Coroutine[Any, Any, None]]:
    """A dependency: 401 without a configured token, 403 when the token lacks `scope`."""
    if scope not in SCOPES:
        raise ValueError(f"require_scope: {scope!r} is not one of {SCOPES}")

    async def check(scopes: ScopesDep) -> None:
        if scope not in scopes:
            raise HTTPException(status_code=403, detail=f"this token lacks the {scope!r} scope")

    return check


async def require_token(scopes: ScopesDep) -> None:
    """A dependency: reject the request with 401 unless it carries a configured bearer token (any scope)."""
