"""Load test, bounded and on loopback only: 50 clients POST 100 batches each to /v1/feedback.

Starts `driftloop serve`'s app (uvicorn with the `api.limits` options) in a
child process on 127.0.0.1 (a free port) with a fresh SQLite store (or
`--store-url`), then runs `--clients` concurrent httpx clients that each POST
`--batches` batches of `--size` events; every 10th batch repeats the one
before it (duplicates) and one event per batch in 20 is invalid
(quarantined). Checks that every event is accounted for (accepted +
duplicates + quarantined = sent, and the store holds exactly the unique valid
events) and that no response was a 5xx; prints events/s over the whole run,
the CPU seconds of the server process and of the clients, and the load
average before and after (clients and server share the machine's cores).

    .venv/bin/python benchmarks/load_feedback.py                     # 50 x 100 batches of 20 events
    .venv/bin/python benchmarks/load_feedback.py --store-url postgresql+psycopg://postgres@127.0.0.1:5432/x
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadserver import ServedApp, load_summary, own_cpu_s  # noqa: E402

TOKEN = "load-test-token-0123456789"


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


async def run_clients(url: str, clients: int, batches: int, size: int, kind: str) -> tuple[Counter, Counter]:
    codes, totals = Counter(), Counter()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    # Bodies are built before the clock starts: the run measures the server, not the encoding.
    bodies = [[json.dumps(batch(c, b, size)).encode() for b in range(batches)] for c in range(clients)]

    def count(status: int, doc: dict | None) -> None:
        codes[status] += 1
        if status == 200 and doc is not None:
            for k in ("received", "accepted", "duplicates", "quarantined"):
                totals[k] += doc[k]

    if kind == "httpx":
        import httpx

        async def client(c: int, http: httpx.AsyncClient) -> None:
            for body in bodies[c]:
                r = await http.post(f"{url}/v1/feedback", content=body, headers=headers)
                count(r.status_code, r.json() if r.status_code == 200 else None)

        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
            await asyncio.gather(*(client(c, http) for c in range(clients)))
        return codes, totals
    import aiohttp

    async def aclient(c: int, http: aiohttp.ClientSession) -> None:
        for body in bodies[c]:
            async with http.post(f"{url}/v1/feedback", data=body, headers=headers) as r:
                doc = json.loads(await r.read()) if r.status == 200 else None
                count(r.status, doc)

    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as http:
        await asyncio.gather(*(aclient(c, http) for c in range(clients)))
    return codes, totals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--size", type=int, default=20, help="events per batch")
    ap.add_argument("--store-url", help="default: a SQLite file in a temporary folder")
    ap.add_argument(
        "--client", choices=("aiohttp", "httpx"), default="aiohttp", help="HTTP client library of the load generator"
    )
    a = ap.parse_args()
    from driftloop.store import Store

    with tempfile.TemporaryDirectory(prefix="driftloop-load-") as tmp:
        url = a.store_url or f"sqlite:///{tmp}/store.db"
        load0 = os.getloadavg()[0]
        with ServedApp(url, TOKEN) as srv:
            cpu0, own0, t = srv.cpu_s(), own_cpu_s(), time.perf_counter()
            codes, totals = asyncio.run(run_clients(srv.url, a.clients, a.batches, a.size, a.client))
            seconds = time.perf_counter() - t
            server_cpu, client_cpu = srv.cpu_s() - cpu0, own_cpu_s() - own0
        load1 = os.getloadavg()[0]
        sent = a.clients * a.batches * a.size
        unique_valid = a.clients * (a.batches - a.batches // 10) * (a.size - 1)
        store = Store(url)
        stored = store.count_events()
        backend = store.engine.dialect.name
        store.close()
        five = sum(n for c, n in codes.items() if c >= 500)
        out = {
            "requests": sum(codes.values()),
            "codes": dict(codes),
            "sent": sent,
            **totals,
            "stored": stored,
            "expected_stored": unique_valid,
            "events_per_s": round(sent / seconds),
            "requests_per_s": round(sum(codes.values()) / seconds),
            "backend": backend,
            "client": a.client,
            **load_summary(seconds, server_cpu, client_cpu, (load0, load1), sent),
        }
        print(json.dumps(out))
        balanced = totals["received"] == sent == totals["accepted"] + totals["duplicates"] + totals["quarantined"]
        assert five == 0 and balanced and stored == unique_valid, out
        print(
            f"{sent:,} events in {seconds:.1f} s: {sent / seconds:,.0f} events/s, "
            f"{sum(codes.values()) / seconds:,.0f} requests/s, zero 5xx, every event accounted for; "
            f"server CPU {server_cpu:.1f} s ({sent / server_cpu:,.0f} events per server CPU second), "
            f"clients {client_cpu:.1f} s, load average {load0:.2f} -> {load1:.2f}"
        )


if __name__ == "__main__":
    main()
