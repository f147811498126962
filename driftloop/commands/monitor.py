"""`driftloop monitor`: drift, quality and segment gaps on the current window."""

from __future__ import annotations

import argparse

from driftloop.commands import config


def add_commands(sub) -> None:
    p = sub.add_parser("monitor", help="drift, quality and segment gaps on the current window")
    p.set_defaults(handler=monitor)


def monitor(args: argparse.Namespace) -> int:
    from driftloop import report

    config(args)
    from flows.common import StageParams
    from flows.monitor import monitor as run

    report.monitor_table(run(StageParams(config=args.config)))
    return 0
