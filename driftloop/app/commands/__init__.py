"""CLI subcommands, one module per area. Each module defines `add_commands(sub)`,
which adds its subparsers and sets `handler=fn(args) -> int` on each.

    # driftloop/app/commands/example.py
    def add_commands(sub):
        p = sub.add_parser("example", help="...")
        p.set_defaults(handler=run)

Modules import heavy packages (Prefect, MLflow, torch) inside their handlers,
so `driftloop --help` and light commands start fast.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config module loads pydantic and YAML: `driftloop --help` needs neither
    from driftloop.core.config import Config

# Listed in help order. Add a module here to add its commands.
MODULES = [
    "driftloop.app.commands.loop",
    "driftloop.app.commands.ingest",
    "driftloop.app.commands.convert",
    "driftloop.app.commands.serve",
    "driftloop.app.commands.monitor",
    "driftloop.app.commands.benchmark",
    "driftloop.app.commands.evaluate",
    "driftloop.app.commands.dashboard",
    "driftloop.app.commands.registry",
    "driftloop.app.commands.gc",
    "driftloop.app.commands.alerts",
]


def config(args: argparse.Namespace, check_files: bool = False) -> Config:
    """The validated config named by `--config` (files checked when asked)."""
    from driftloop.core.config import load_config

    return load_config(args.config, check_files=check_files)
