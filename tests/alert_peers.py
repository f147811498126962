"""Peers and builders for the alert tests: a scripted webhook receiver on loopback, a URL nobody
listens on, a config writer and a sample event."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from driftloop.alerts import make_event
from driftloop.core.config import load_config
from driftloop.store import Store

SECRET = "s3cret-Hx9-never-logged"


class Hook:
    """A webhook receiver in a thread: answers each POST with the next scripted status (then 200)."""

    def __init__(self, statuses=(), delay_s: float = 0.0):
        self.statuses, self.delay_s, self.requests = list(statuses), delay_s, []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = hook.statuses.pop(0) if hook.statuses else 200
                hook.requests.append((self.headers, body, status))
                time.sleep(hook.delay_s)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):  # keep pytest's output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0K3N"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_factory():
    hooks = []

    def make(*statuses, delay_s: float = 0.0) -> Hook:
        hooks.append(Hook(statuses, delay_s))
        return hooks[-1]

    yield make
    for h in hooks:
        h.close()


def down_url() -> str:
    """A loopback URL nothing listens on (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/T0K3N"


def write_cfg(folder: Path, webhooks: list[dict], **alerts) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    body = {
        "retries": 2,
        "backoff_seconds": 0.0,
        "backoff_jitter": False,
        "timeout_seconds": 2.0,
        **alerts,
        "webhooks": [{"secret_env": "HOOK_SECRET", **w} for w in webhooks],
    }
    p = folder / "driftloop.yaml"
    p.write_text(yaml.safe_dump({"project": "shop", "state_dir": "st", "alerts": body}))
    return p


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", SECRET)


def setup(tmp_path, webhooks, **alerts):
    cfg = load_config(write_cfg(tmp_path, webhooks, **alerts), env={})
    store = Store(cfg.store_url)
    store.migrate()
    return cfg, store


def sample_event(cfg, type_: str):
    return make_event(
        cfg,
        type_,
        model_version="2",
        previous_version="1",
        cycle="20261126-0300-ab12",
        reasons=[
            "thumbs-up rate in topic=billing fell 0.81 [0.79,0.83] -> 0.62 [0.58,0.66]",
            "golden: challenger +0.31 [0.22, 0.40], p<0.001",
        ],
        run_id="0f3c9d",
        experiment_id="1",
        data={"n": 120},
    )
