"""`driftloop ingest`: read the configured sources into the store and print the accounting."""

from __future__ import annotations

import argparse

from driftloop.app.commands import config


def add_commands(sub) -> None:
    p = sub.add_parser("ingest", help="ingest the configured sources (files, SQL) into the store")
    p.set_defaults(handler=ingest)


def ingest(args: argparse.Namespace) -> int:
    from driftloop.app import report
    from driftloop.ingest import check_sources

    check_sources(config(args), args.config or "driftloop.yaml")
    from flows.common import StageParams, run_flow
    from flows.ingest import ingest as run

    s = run_flow(run, StageParams(config=args.config))
    report.ingest_table(s)
    ok = s["read"] == s["accepted"] + s["duplicates"] + s["quarantined"]
    report.console.print(
        f"read {s['read']} = accepted {s['accepted']} + duplicates {s['duplicates']} + "
        f"quarantined {s['quarantined']}" + ("" if ok else "  (DOES NOT BALANCE)")
    )
    if s.get("redacted"):
        report.console.print("redacted: " + ", ".join(f"{k} x{n}" for k, n in sorted(s["redacted"].items())))
    for err in s.get("errors") or []:
        report.console.print(f"[yellow]warning[/]: {err}")
    return 0 if ok else 1
