"""`driftloop ingest`: read the configured sources into the store."""

from __future__ import annotations

import argparse

from driftloop.commands import config


def add_commands(sub) -> None:
    p = sub.add_parser("ingest", help="ingest the configured sources")
    p.set_defaults(handler=ingest)


def ingest(args: argparse.Namespace) -> int:
    from driftloop import report

    config(args, check_files=True)
    from flows.common import StageParams
    from flows.ingest import ingest as run

    report.ingest_table(run(StageParams(config=args.config)))
    return 0
