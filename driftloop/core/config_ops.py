"""Config sections of operations: where benchmark suites run (serial or Dask) and alert webhooks.

Part of the one configuration root in `driftloop.core.config`, which re-exports
every name here.

    >>> AlertsConfig(webhooks=[]).retries
    3
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from driftloop.core.config_base import ENV_PREFIX, _Section


class RunnerConfig(_Section):
    """Where the benchmark suites run: in the flow's process, or one per Dask worker process.

    No `threads` kind: two evaluations in one process can corrupt each other (while it loads a
    model, transformers patches torch.nn.init and its own weight tying process-wide); a trial
    run on threads gave wrong per-item results.
    """

    kind: Literal["serial", "dask"] = Field(
        default="serial",
        description="serial: every suite in one lm-eval call in the flow's process (the model loaded once); dask: one suite per Dask worker process, through prefect-dask's DaskTaskRunner.",
    )
    address: str | None = Field(
        default=None,
        description="kind: dask: scheduler address of a running Dask cluster, e.g. `tcp://10.0.0.5:8786`; unset: a temporary LocalCluster of n_workers processes per benchmark run. Workers must see the same paths as the flow (config file, state_dir, model folder).",
    )
    n_workers: int = Field(
        default=2,
        ge=1,
        description="kind: dask without address: worker processes of the LocalCluster (suites evaluated at once).",
    )
    threads_per_worker: int = Field(
        default=1,
        ge=1,
        description="kind: dask: torch intra-op threads of each worker's evaluation. A worker process evaluates one suite at a time, whatever its Dask thread count.",
    )

    @model_validator(mode="after")
    def _dask(self) -> RunnerConfig:
        from pydantic_core import PydanticCustomError

        if self.address is not None and self.kind != "dask":
            raise PydanticCustomError(
                "runner", "address applies to kind: dask only (kind is {kind})", {"kind": self.kind}
            )
        if self.kind == "dask":
            import importlib.util

            if importlib.util.find_spec("prefect_dask") is None:
                raise PydanticCustomError(
                    "runner", "kind: dask needs the prefect-dask package (pip install prefect-dask)"
                )
        return self


AlertEventType = Literal[
    "regression.detected",
    "retrain.started",
    "retrain.finished",
    "retrain.failed",
    "retrain.skipped",
    "candidate.promoted",
    "candidate.rejected",
    "champion.rolled_back",
    "ingest.quarantine",
    "alert.test",
]


class WebhookConfig(_Section):
    """One alert receiver. The signing secret is read from the environment or a file, never written here."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Short unique name (letters, digits, `_.-`), used by `driftloop alerts retry --webhook` and in logs.",
    )
    url: str = Field(
        description="http(s) URL the alert is POSTed to; redirects are not followed. Logged by host only, since chat webhook URLs carry tokens."
    )
    format: Literal["json", "slack"] = Field(
        default="json",
        description="`json`: the documented generic event; `slack`: a Slack-compatible body with `text` and `blocks`.",
    )
    secret_env: str | None = Field(
        default=None,
        description="Environment variable holding the HMAC-SHA256 signing secret (give this or `secret_file`).",
    )
    secret_file: str | None = Field(
        default=None,
        description="File holding the signing secret, surrounding whitespace ignored (relative to the config file; give this or `secret_env`).",
    )
    events: list[AlertEventType] | None = Field(
        default=None, description="Event types sent to this webhook; null: every type."
    )

    @model_validator(mode="after")
    def _checked(self) -> WebhookConfig:
        from urllib.parse import urlsplit

        from pydantic_core import PydanticCustomError

        try:
            u = urlsplit(self.url)
            u.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise PydanticCustomError("webhook", "url: not a valid URL") from None
        if u.scheme not in ("http", "https") or not u.hostname:
            raise PydanticCustomError(
                "webhook",
                "url: only http:// and https:// URLs with a host are accepted, got scheme {s}",
                {"s": repr(u.scheme)},
            )
        if (self.secret_env is None) == (self.secret_file is None):
            raise PydanticCustomError(
                "webhook",
                "give exactly one of secret_env and secret_file (the signing secret is never written in the config)",
            )
        if self.secret_env is not None and (not self.secret_env or self.secret_env.upper().startswith(ENV_PREFIX)):
            raise PydanticCustomError(
                "webhook",
                "secret_env: {v} is not usable: DRIFTLOOP_* variables are read as config keys; pick another name",
                {"v": repr(self.secret_env)},
            )
        return self


METADATA_NAMES = frozenset({"metadata.google.internal", "metadata", "instance-data", "instance-data.ec2.internal"})


def metadata_host(host: str) -> bool:
    """True for a link-local address (169.254.0.0/16, fe80::/10), AWS's fd00:ec2::254 or a cloud metadata name."""
    import ipaddress

    if host in METADATA_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_link_local or ip == ipaddress.ip_address("fd00:ec2::254")


class AlertsConfig(_Section):
    webhooks: list[WebhookConfig] = Field(
        default_factory=list,
        description="Receivers of alerts: each a name, an http(s) `url`, a `format`, a secret source and an optional `events` filter.",
    )
    allow_hosts: list[str] | None = Field(
        default=None,
        description="When set, every webhook's host must be one of these (exact, case-insensitive; `*.example.com` matches its subdomains).",
    )
    retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description="Further attempts after a failed one (connect errors, timeouts, 5xx and 429 are retried; other 4xx are not).",
    )
    backoff_seconds: float = Field(
        default=1.0,
        ge=0,
        description="Wait before the first retry (seconds); doubles with each further retry, capped at 60 s.",
    )
    backoff_jitter: bool = Field(
        default=True,
        description="Randomise each wait between half and all of it, so many senders do not retry in step.",
    )
    timeout_seconds: float = Field(default=5.0, gt=0, description="Connect and read timeout of one attempt (seconds).")
    quarantine_threshold: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="`ingest.quarantine` fires when quarantined / (accepted + quarantined) of one ingestion exceeds this fraction.",
    )
    api_quarantine_window_seconds: float = Field(
        default=300.0,
        gt=0,
        description="The HTTP feedback API adds up its requests over windows of this length (s); a window whose quarantined share exceeds `quarantine_threshold` sends one `ingest.quarantine`.",
    )
    api_quarantine_min_rows: int = Field(
        default=20,
        ge=1,
        description="Fewest accepted + quarantined events in one API window before its share is judged, so one bad event alone sends nothing.",
    )
    mlflow_ui_url: str | None = Field(
        default=None,
        description="Address of the MLflow UI for run links in alerts; default: the tracking URI when it is http(s), else no link.",
    )
    allow_link_local: bool = Field(
        default=False,
        description="Allow webhooks on link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254, metadata.google.internal); refused by default, since a webhook there reads instance credentials. A webhook's name is resolved when an alert is sent and refused if any address it resolves to is one of these (or loopback); the alert goes to the address checked.",
    )

    @model_validator(mode="after")
    def _hosts(self) -> AlertsConfig:
        from urllib.parse import urlsplit

        from pydantic_core import PydanticCustomError

        names = [w.name for w in self.webhooks]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise PydanticCustomError("alerts", "webhooks: name {n} is used twice", {"n": repr(dup)})
        if not self.allow_link_local:
            for i, w in enumerate(self.webhooks):
                host = (urlsplit(w.url).hostname or "").rstrip(".").lower()
                if metadata_host(host):
                    raise PydanticCustomError(
                        "alerts",
                        "webhooks.{i}.url: host {h} is a link-local or cloud metadata address; set alerts.allow_link_local to send there",
                        {"i": i, "h": repr(host)},
                    )
        if self.allow_hosts is None:
            return self
        allowed = [h.lower().rstrip(".") for h in self.allow_hosts]
        for i, w in enumerate(self.webhooks):
            host = (urlsplit(w.url).hostname or "").rstrip(".")
            if not any(host == a or (a.startswith("*.") and host.endswith(a[1:])) for a in allowed):
                raise PydanticCustomError(
                    "alerts", "webhooks.{i}.url: host {h} is not in alerts.allow_hosts", {"i": i, "h": repr(host)}
                )
        return self
