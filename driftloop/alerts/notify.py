"""Send an alert to every configured webhook, and re-send dead letters; neither ever raises.

A failing webhook never blocks or fails the loop: each delivery is bounded by
`alerts.retries` x `alerts.timeout_seconds` plus the backoff, a failure is
logged in one line (webhook name and host, never the secret or the full URL)
and written to the dead-letter table with its exact body, and the caller gets
a per-webhook outcome.

    >>> outcomes = notify(cfg, store, make_event(cfg, "retrain.started", model_version="1"))
    >>> [(o.webhook, o.ok, o.attempts) for o in outcomes]
    [('ops', True, 1)]
    >>> resend(cfg, store)          # what `driftloop alerts retry` does
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from driftloop.alerts.deliver import post
from driftloop.alerts.events import AlertEvent
from driftloop.alerts.payloads import render
from driftloop.core.config import Config, WebhookConfig
from driftloop.store import deadletter as dl

_LOG = logging.getLogger("driftloop.alerts")


@dataclass
class Outcome:
    """One webhook's result: delivered or not, attempts, last status and error, dead-letter row id."""

    webhook: str
    ok: bool
    attempts: int = 0
    status: int | None = None
    error: str = ""
    dead_letter_id: int | None = None
    event_id: str = ""


def host(url: str) -> str:
    """The host[:port] of a URL: what logs and tables show instead of the URL, which may hold a token."""
    u = urlsplit(url)
    return u.netloc.rpartition("@")[2] or "?"


def read_secret(cfg: Config, w: WebhookConfig) -> str:
    """The webhook's signing secret from its environment variable or file; ValueError (naming the
    source, never the value) when it is missing or empty."""
    if w.secret_env is not None:
        value = os.environ.get(w.secret_env, "")
        where = f"environment variable {w.secret_env}"
    else:
        path = cfg.path(w.secret_file or "")
        where = f"secret file {path}"
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError:
            value = ""
    if not value:
        raise ValueError(f"{where} is not set or empty")
    return value


def matches(w: WebhookConfig, event_type: str) -> bool:
    """Whether the webhook's `events` filter lets this type through (no filter: every type)."""
    return w.events is None or event_type in w.events


def send_one(
    cfg: Config,
    w: WebhookConfig,
    body: bytes,
    event_type: str,
    delivery: str,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, int, int | None, str]:
    """Deliver a rendered body to one webhook: (ok, attempts, status, error). Never raises."""
    try:
        secret = read_secret(cfg, w)
    except ValueError as e:
        return False, 0, None, str(e)
    a = cfg.alerts
    try:
        r = post(
            w.url,
            body,
            secret,
            event_type,
            delivery,
            retries=a.retries,
            backoff_seconds=a.backoff_seconds,
            timeout_seconds=a.timeout_seconds,
            jitter=a.backoff_jitter,
            sleep=sleep,
            allow_link_local=a.allow_link_local,
        )
    except Exception as e:  # noqa: BLE001 - a bug or an odd URL must not fail the loop
        return False, 1, None, type(e).__name__
    error = r.error.replace(secret, "***") if r.error else ""
    return r.ok, r.attempts, r.status, error


def notify(
    cfg: Config,
    store: Any,
    event: AlertEvent,
    *,
    only: str | None = None,
    dead_letter: bool = True,
    logger: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Outcome]:
    """Send `event` to every webhook whose filter matches (or only the one named `only`) and return
    one Outcome each. Failures are logged in one line and, with `dead_letter`, written to the store's
    dead-letter table; nothing here raises, so an alert can never fail the loop."""
    log = logger or _LOG
    outcomes: list[Outcome] = []
    try:
        targets = [w for w in cfg.alerts.webhooks if (w.name == only if only else matches(w, event.type))]
        body = {fmt: render(event, fmt) for fmt in {w.format for w in targets}}
    except Exception as e:  # noqa: BLE001
        log.warning("alert %s not sent: %s", event.type, type(e).__name__)
        return outcomes
    for w in targets:
        o = Outcome(webhook=w.name, ok=False, event_id=event.id)
        try:
            o.ok, o.attempts, o.status, o.error = send_one(
                cfg, w, body[w.format], event.type, f"{event.id}.{w.name}", sleep
            )
            if o.ok:
                log.info("alert %s delivered to %s (%s) in %d attempt(s)", event.type, w.name, host(w.url), o.attempts)
            else:
                if dead_letter and store is not None:
                    o.dead_letter_id = dl.add(
                        store,
                        webhook=w.name,
                        url=w.url,
                        event_type=event.type,
                        event_id=event.id,
                        body=body[w.format],
                        error=o.error,
                        attempts=o.attempts,
                    )
                log.warning(
                    "alert %s to %s (%s) failed after %d attempt(s): %s%s",
                    event.type,
                    w.name,
                    host(w.url),
                    o.attempts,
                    o.error,
                    f"; dead letter #{o.dead_letter_id}" if o.dead_letter_id else "",
                )
        except Exception as e:  # noqa: BLE001 - e.g. the store is down: still never fail the caller
            o.error = o.error or type(e).__name__
            log.warning("alert %s to %s: could not record the failure: %s", event.type, w.name, type(e).__name__)
        outcomes.append(o)
    return outcomes


def resend(
    cfg: Config,
    store: Any,
    webhook: str | None = None,
    on_row: Callable[[Outcome], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Outcome]:
    """Re-send every undelivered dead letter (of one webhook when named) to the webhook of that name in
    the current config, with a fresh signature; mark the delivered ones and keep the others with their
    new error. Returns one Outcome per row, `dead_letter_id` set; `on_row` is called after each."""
    by_name = {w.name: w for w in cfg.alerts.webhooks}
    out = []
    for row in dl.pending(store, webhook):
        o = Outcome(webhook=row["webhook"], ok=False, dead_letter_id=row["id"], event_id=row["event_id"])
        w = by_name.get(row["webhook"])
        if w is None:
            o.error = f"webhook {row['webhook']!r} is no longer in alerts.webhooks"
        else:
            o.ok, o.attempts, o.status, o.error = send_one(
                cfg, w, row["body"].encode("utf-8"), row["event_type"], f"{row['event_id']}.{row['webhook']}", sleep
            )
        if o.ok:
            dl.mark_delivered(store, row["id"], o.attempts)
        else:
            dl.record_failure(store, row["id"], o.error, o.attempts, w.url if w is not None else "")
        out.append(o)
        if on_row:
            on_row(o)
    return out


def send(cfg: Config, store: Any, type: str, *, logger: Any = None, **fields: Any) -> list[Outcome]:
    """Build an event of `type` (fields as in `events.make_event`) and `notify`; a no-op without
    webhooks, and never raises, even for a bad field."""
    if not cfg.alerts.webhooks:
        return []
    from driftloop.alerts.events import make_event

    try:
        event = make_event(cfg, type, **fields)
    except Exception as e:  # noqa: BLE001
        (logger or _LOG).warning("alert %s not sent: %s", type, str(e).splitlines()[0][:200])
        return []
    return notify(cfg, store, event, logger=logger)
