"""`driftloop benchmark`: run benchmark suites on a model, or list them."""

from __future__ import annotations

import argparse

from driftloop.commands import config


def add_commands(sub) -> None:
    p = sub.add_parser("benchmark", help="run benchmark suites on a model")
    p.add_argument("--model", default="champion", help="champion, challenger, a version number, or a local path")
    p.add_argument("--suite", action="append", default=None, help="suite name (repeatable; default: all)")
    p.add_argument("--list", action="store_true", help="list the configured suites and tasks")
    p.set_defaults(handler=benchmark)


def benchmark(args: argparse.Namespace) -> int:
    from driftloop import report

    cfg = config(args)
    if args.list:
        report.suites(cfg)
        return 0
    from flows.benchmark import BenchmarkParams, benchmark as run

    report.benchmark_table(run(BenchmarkParams(config=args.config, model=args.model, suites=args.suite)))
    return 0
