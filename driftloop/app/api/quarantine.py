"""`ingest.quarantine` for the HTTP feedback API: the quarantined share over windows of requests.

A file or SQL ingestion is one run, judged once at its end. The API gets a
stream of small requests instead, so their counts add up over
`alerts.api_quarantine_window_seconds`; when a window ends with at least
`alerts.api_quarantine_min_rows` accepted + quarantined events and a
quarantined share over `alerts.quarantine_threshold`, one alert is sent (the
same payload as an ingestion's: the share, then the commonest `field: problem`
reasons, never values). A thread closes the windows, so a request never waits
for a webhook, and the window still closes when requests stop.

    >>> watch = QuarantineWatch(cfg, store)
    >>> watch.start()
    >>> watch.add(accepted=3, duplicates=0, quarantined=1, reasons={"ts: no timezone": 1})
    >>> watch.stop()       # closes the last window
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from driftloop.app.api.periodic import Periodic

_LOG = logging.getLogger("driftloop.app.api")


class QuarantineWatch:
    """Counts of the API's requests in the current window; `flush` judges and resets them."""

    def __init__(self, cfg: Any, store: Any, send: Callable[..., Any] | None = None) -> None:
        from driftloop.alerts import send as send_alert

        self.cfg, self.store = cfg, store
        self._send = send or send_alert
        self._lock = threading.Lock()
        self._windows = Periodic(cfg.alerts.api_quarantine_window_seconds, self.flush, "driftloop-quarantine-watch")
        self._reset()

    def _reset(self) -> None:
        self.counts = {"read": 0, "accepted": 0, "duplicates": 0, "quarantined": 0}
        self.reasons: Counter[str] = Counter()
        self.started = time.time()

    def add(self, accepted: int, duplicates: int, quarantined: int, reasons: dict[str, int]) -> None:
        """Count one request's outcome."""
        with self._lock:
            self.counts["read"] += accepted + duplicates + quarantined
            self.counts["accepted"] += accepted
            self.counts["duplicates"] += duplicates
            self.counts["quarantined"] += quarantined
            self.reasons.update(reasons)

    def flush(self) -> list[Any]:
        """End the window: send `ingest.quarantine` if it breached (outcomes), and start a new one."""
        from driftloop.alerts.events import quarantine_alert, quarantined_share

        with self._lock:
            summary = {**self.counts, "reasons": dict(self.reasons)}
            began = self.started
            self._reset()
        a = self.cfg.alerts
        judged = summary["accepted"] + summary["quarantined"]
        if judged < a.api_quarantine_min_rows or quarantined_share(summary) <= a.quarantine_threshold:
            return []
        fields = quarantine_alert(summary, a.quarantine_threshold)
        fields["reasons"][0] += f" by POST /v1/feedback in {time.time() - began:.0f} s"
        return self._send(self.cfg, self.store, "ingest.quarantine", logger=_LOG, **fields)

    def start(self) -> None:
        """Close a window every `alerts.api_quarantine_window_seconds` in a daemon thread (no webhooks: no thread)."""
        if self.cfg.alerts.webhooks:
            self._windows.start()

    def stop(self) -> None:
        """Stop the thread and judge the window so far (at shutdown: nothing counted is left unjudged)."""
        if self._windows.stop():
            self.flush()
