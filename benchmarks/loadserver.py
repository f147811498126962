"""Shared by the HTTP load benchmarks: `driftloop serve`'s app in a child process on loopback.

The server runs as `driftloop serve` runs it (uvicorn with the `api.limits`
options, no access log) in its own process, so its CPU time can be read apart
from the clients': `ServedApp.cpu_s()` is the user + system seconds of the
child and its own children (parse workers). With DRIFTLOOP_BENCH_PYSPY=PATH
(and py-spy installed: `pip install py-spy`), py-spy samples the server while
the clients run and writes its stacks (raw format, the GIL holder only) to PATH.

    >>> with ServedApp("sqlite:////tmp/x/store.db", TOKEN) as srv:
    ...     run_clients(srv.url)
    ...     print(srv.cpu_s())

    python benchmarks/loadserver.py PORT STORE_URL TOKEN [OVERRIDES_JSON]   # the child itself
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of process `pid` and its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """Ids of the processes below `pid` (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            kids = [int(x) for x in task.read_text().split()]
            out += kids
            todo += kids
    return out


def own_cpu_s() -> float:
    """User + system CPU seconds of this (client) process."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class ServedApp:
    """The API in a child process on a free loopback port, with a fresh (migrated) store."""

    def __init__(self, store_url: str, token: str, overrides: dict[str, Any] | None = None) -> None:
        self.store_url, self.token, self.overrides = store_url, token, overrides or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> ServedApp:
        args = [sys.executable, __file__, str(self.port), self.store_url, self.token, json.dumps(self.overrides)]
        self.proc = subprocess.Popen(args, cwd=ROOT)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode} before it listened")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not listen within 60 s") from None
                time.sleep(0.05)
        profile = os.environ.get("DRIFTLOOP_BENCH_PYSPY")  # see the module docstring
        if profile:
            spy = [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--gil",
                "-r",
                "100",
                "-f",
                "raw",
                "-o",
                profile,
            ]
            self.spy = subprocess.Popen([*spy, "--pid", str(self.proc.pid)], stdout=subprocess.DEVNULL)
        return self

    def cpu_s(self) -> float:
        """CPU seconds the server process and its children (parse workers) have used so far."""
        assert self.proc is not None
        total = _cpu_of(self.proc.pid)
        for pid in _children(self.proc.pid):
            try:
                total += _cpu_of(pid)
            except OSError:  # ended meanwhile
                pass
        return total

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if getattr(self, "spy", None) is not None:
            self.spy.send_signal(signal.SIGINT)
            self.spy.wait(30)
        self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown: the lifespan closes the store
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def serve(port: int, store_url: str, token: str, overrides: dict[str, Any]) -> None:
    """Run the app as `driftloop serve` does (the child process)."""
    import uvicorn

    from driftloop.app.api import create_app
    from driftloop.app.api.limits import uvicorn_options
    from driftloop.core.config import load_config
    from driftloop.store import Store

    store = Store(store_url)
    store.migrate()
    cfg = load_config(None, env={}, check_files=False, overrides={"api": {"token": token, **overrides}})
    app = create_app(cfg, store=store)
    uvicorn.run(
        app, host="127.0.0.1", port=port, access_log=False, log_level="warning", **uvicorn_options(cfg.api.limits)
    )
    store.close()


def load_summary(
    seconds: float, server_cpu: float, client_cpu: float, load: tuple[float, float], items: int
) -> dict[str, Any]:
    """The machine-load part of a benchmark's result; `items` (events, spans) per server CPU second
    is the figure that depends least on what else the machine runs."""
    return {
        "seconds": round(seconds, 2),
        "server_cpu_s": round(server_cpu, 2),
        "per_server_cpu_s": round(items / server_cpu) if server_cpu else None,
        "client_cpu_s": round(client_cpu, 2),
        "cores": os.cpu_count(),
        "load_before": round(load[0], 2),
        "load_after": round(load[1], 2),
    }


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
