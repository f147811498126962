"""Alert webhooks: typed events, JSON and Slack payloads, HMAC-SHA256 signatures, retried delivery,
and a dead-letter table that `driftloop alerts retry` re-sends.

    >>> from driftloop.alerts import make_event, notify
    >>> ev = make_event(cfg, "retrain.failed", model_version="1", reasons=["CUDA out of memory"], run_id=run)
    >>> notify(cfg, store, ev)       # never raises; one Outcome per webhook
    [Outcome(webhook='ops', ok=True, attempts=1, status=200, ...)]
"""

from driftloop.alerts.events import EVENT_TYPES, AlertEvent, make_event
from driftloop.alerts.notify import Outcome, notify, resend, send

__all__ = ["EVENT_TYPES", "AlertEvent", "Outcome", "make_event", "notify", "resend", "send"]
