"""Config of the HTTP API's defences against abusive clients: a lockout after repeated bearer-token
failures from one address, and timeouts and bounds against slow clients (`api.limits`).

Part of `api` in the one configuration root (`driftloop.core.config`).

    >>> ApiLimits().auth_failures
    10
"""

from __future__ import annotations

from pydantic import Field, model_validator

from driftloop.core.config_base import _Section


class ApiLimits(_Section):
    """Lockout after failed authentication, and bounds on slow or numerous clients."""

    auth_failures: int = Field(
        default=10,
        ge=1,
        description="Failed authentications (401: missing or wrong bearer token, bad webhook signature) from one client address within `auth_window_s` that lock that address out.",
    )
    auth_window_s: float = Field(
        default=60.0, gt=0, description="Window (s) in which `auth_failures` failures lock an address out."
    )
    auth_lockout_s: float = Field(
        default=300.0,
        gt=0,
        description="How long (s) a locked-out address gets 429 with Retry-After on every request, valid token or not. Counted in the API process: with several replicas, put a limit at the proxy too.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Peer addresses whose X-Forwarded-For header names the client (uvicorn's forwarded_allow_ips), as for a reverse proxy on the same host; the lockout counts per client so named. Empty: the peer address is the client, and behind a proxy every client shares the proxy's lockout.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest time (s) from the end of a request's headers to the end of its body; a slower body gets 408 and the connection is closed.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Longest time (s) a connection may take to send a complete request head (at its start, or after a response when kept alive, then `keep_alive_s` counts too); a slower one is closed.",
    )
    keep_alive_s: float = Field(
        default=75.0,
        gt=0,
        description="How long (s) an idle kept-alive connection stays open (uvicorn's timeout_keep_alive); longer than common load balancers' idle timeout, so a client never sends on a connection the server is closing.",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=4096,
        description="Largest request head (bytes) read before it is complete (uvicorn's h11_max_incomplete_event_size); a larger one gets 431/400.",
    )
    max_connections: int | None = Field(
        default=1000,
        ge=1,
        description="Connections and tasks served at once (uvicorn's limit_concurrency); beyond that a request gets 503. None: no limit.",
    )

    @model_validator(mode="after")
    def _windows(self) -> ApiLimits:
        from pydantic_core import PydanticCustomError

        if self.auth_lockout_s < self.auth_window_s:
            raise PydanticCustomError(
                "api_limits",
                "auth_lockout_s ({lock}) must be at least auth_window_s ({win})",
                {"lock": f"{self.auth_lockout_s:g}", "win": f"{self.auth_window_s:g}"},
            )
        return self
