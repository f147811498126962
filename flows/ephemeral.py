"""Prefect's temporary server dies with the process that started it.

Where a flow runs on Prefect's engine with no API configured, Prefect starts a temporary
server (`python -m uvicorn ... prefect.server.api.server:create_app`, about 300 MB) and stops it
at a clean exit. A process killed with SIGKILL never gets there, and the server lives on under
init. `install()` makes Prefect start that server through a small watchdog: the server's own
process checks twice a second whether its parent is still the process that started it, and
ends itself (SIGTERM, uvicorn's clean stop) once it is not.

    >>> install()  # flows.common does this on import
"""

from __future__ import annotations

import sys
from typing import Any

# Runs in the server's process, before uvicorn: argv[1] is the parent's pid, the rest uvicorn's.
WATCHDOG = """
import os, signal, sys, threading, time
parent = int(sys.argv[1])
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    os._exit(1)
threading.Thread(target=watch, daemon=True).start()
sys.argv = ["uvicorn", *sys.argv[2:]]
from uvicorn.main import main
main()
"""


def install() -> bool:
    """Start Prefect's temporary server under the watchdog; False where this Prefect has no such hook."""
    import os

    from prefect.server.api import server

    cls = getattr(server, "SubprocessASGIServer", None)
    original = getattr(cls, "_run_uvicorn_command", None)
    if cls is None or original is None or getattr(original, "_driftloop_watchdog", False):
        return cls is not None and original is not None
    import subprocess

    def run_under_watchdog(self: Any) -> Any:
        real_popen = subprocess.Popen

        def popen(args: list[str], **kw: Any) -> Any:
            if list(args[:3]) == [sys.executable, "-m", "uvicorn"]:
                args = [sys.executable, "-c", WATCHDOG, str(os.getpid()), *args[3:]]
            return real_popen(args, **kw)

        subprocess.Popen = popen  # type: ignore[misc,assignment]
        try:
            return original(self)
        finally:
            subprocess.Popen = real_popen  # type: ignore[misc]

    run_under_watchdog._driftloop_watchdog = True  # type: ignore[attr-defined]
    cls._run_uvicorn_command = run_under_watchdog  # type: ignore[method-assign]
    return True
