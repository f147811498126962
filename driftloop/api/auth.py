"""Bearer-token authentication shared by every router of the API.

    >>> @router.post("/v1/x", dependencies=[Depends(require_token)])
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request


def require_token(request: Request) -> None:
    """Reject the request with 401 unless it carries `Authorization: Bearer <api.token>`.

    The comparison takes constant time, so the token cannot be guessed byte by
    byte from response times.
    """
    expected: bytes = request.app.state.token
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
