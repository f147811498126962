"""Load test, bounded and on loopback only: 50 clients POST 100 batches each to /v1/feedback.

Starts `driftloop serve`'s app under uvicorn on 127.0.0.1 (a free port) with a
fresh SQLite store (or `--store-url`), then runs `--clients` concurrent httpx
clients that each POST `--batches` batches of `--size` events; every 10th
batch repeats the one before it (duplicates) and one event per batch in 20 is
invalid (quarantined). Checks that every event is accounted for (accepted +
duplicates + quarantined = sent, and the store holds exactly the unique valid
events) and that no response was a 5xx; prints events/s over the whole run.

    .venv/bin/python benchmarks/load_feedback.py                     # 50 x 100 batches of 20 events
    .venv/bin/python benchmarks/load_feedback.py --store-url postgresql+psycopg://postgres@127.0.0.1:5432/x
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOKEN = "load-test-token"


def batch(c: int, b: int, size: int) -> list[dict]:
    k = b - 1 if b % 10 == 9 else b  # every 10th batch repeats the previous one
    rows = [
        {
            "event_id": f"{c}-{k}-{i}",
            "ts": "2026-11-01T10:00:00+00:00",
            "prompt": f"question {c} {k} {i}",
            "response": "an answer",
            "rating": 1 + i % 5,
            "segment": {"topic": "billing"},
        }
        for i in range(size)
    ]
    rows[0]["rating"] = 9  # invalid: quarantined
    return rows


async def run_clients(url: str, clients: int, batches: int, size: int) -> tuple[Counter, Counter]:
    import httpx

    codes, totals = Counter(), Counter()
    limits = httpx.Limits(max_connections=clients)

    async def client(c: int, http: httpx.AsyncClient) -> None:
        for b in range(batches):
            r = await http.post(
                f"{url}/v1/feedback", json=batch(c, b, size), headers={"Authorization": f"Bearer {TOKEN}"}
            )
            codes[r.status_code] += 1
            if r.status_code == 200:
                for k in ("received", "accepted", "duplicates", "quarantined"):
                    totals[k] += r.json()[k]

    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(c, http) for c in range(clients)))
    return codes, totals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--size", type=int, default=20, help="events per batch")
    ap.add_argument("--store-url", help="default: a SQLite file in a temporary folder")
    a = ap.parse_args()
    import uvicorn

    from driftloop.app.api import create_app
    from driftloop.core.config import load_config
    from driftloop.store import Store

    with tempfile.TemporaryDirectory(prefix="driftloop-load-") as tmp:
        store = Store(a.store_url or f"sqlite:///{tmp}/store.db")
        store.migrate()
        cfg = load_config(None, env={}, check_files=False, overrides={"api": {"token": TOKEN}})
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(cfg, store=store),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                access_log=False,
                timeout_keep_alive=75,
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        t = time.perf_counter()
        codes, totals = asyncio.run(run_clients(f"http://127.0.0.1:{port}", a.clients, a.batches, a.size))
        seconds = time.perf_counter() - t
        server.should_exit = True
        thread.join(30)
        sent = a.clients * a.batches * a.size
        unique_valid = a.clients * (a.batches - a.batches // 10) * (a.size - 1)
        stored = store.count_events()
        five = sum(n for c, n in codes.items() if c >= 500)
        out = {
            "requests": sum(codes.values()),
            "codes": dict(codes),
            "sent": sent,
            **totals,
            "stored": stored,
            "expected_stored": unique_valid,
            "seconds": round(seconds, 2),
            "events_per_s": round(sent / seconds),
            "requests_per_s": round(sum(codes.values()) / seconds),
            "backend": store.engine.dialect.name,
        }
        print(json.dumps(out))
        balanced = totals["received"] == sent == totals["accepted"] + totals["duplicates"] + totals["quarantined"]
        assert five == 0 and balanced and stored == unique_valid, out
        print(
            f"{sent:,} events in {seconds:.1f} s: {sent / seconds:,.0f} events/s, "
            f"{sum(codes.values()) / seconds:,.0f} requests/s, zero 5xx, every event accounted for"
        )
        store.close()


if __name__ == "__main__":
    main()
