"""A function called every N seconds in a daemon thread, for the API's background chores.

>>> beats = Periodic(30.0, runner.beat, "driftloop-eval-heartbeat")
>>> beats.start()
>>> beats.stop()   # True: it was running
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Periodic:
    """Calls `fn()` every `seconds` (first after one period) until `stop()`; start and stop are idempotent."""

    def __init__(self, seconds: float, fn: Callable[[], object], name: str) -> None:
        self.seconds, self.fn, self.name = seconds, fn, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return

        def run() -> None:
            while not self._stop.wait(self.seconds):
                self.fn()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the thread (waiting up to `timeout` for a call in progress); True if it was running."""
        self._stop.set()
        if self._thread is None:
            return False
        self._thread.join(timeout)
        self._thread = None
        return True
