"""`driftloop gc [--older-than 30d] [--dry-run]`: remove what the state folder can do without
(see driftloop.services.gc); never a registered version's files."""

from __future__ import annotations

import argparse

from driftloop.app.commands import config


def add_commands(sub) -> None:
    p = sub.add_parser(
        "gc", help="remove old HTML reports, job records and unregistered models (never a version's files)"
    )
    p.add_argument("--older-than", default=None, help="age like 30d or 12h (default: retention.older_than_days)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.set_defaults(handler=gc)


def gc(args: argparse.Namespace) -> int:
    from driftloop.services.gc import collect_garbage, parse_age
    from driftloop.tracking import Tracker

    cfg = config(args)
    days = parse_age(args.older_than) if args.older_than else cfg.retention.older_than_days
    report = collect_garbage(cfg, Tracker.from_config(cfg), days, args.dry_run)
    verb = "would remove" if report.dry_run else "removed"
    kinds: dict[str, list[int]] = {}
    for r in report.removed:
        kinds.setdefault(r.kind, []).append(r.bytes)
    for kind, sizes in sorted(kinds.items()):
        print(f"{verb} {len(sizes)} {kind}(s), {sum(sizes) / 1e6:.1f} MB")
    print(f"gc: {verb} {len(report.removed)} item(s) older than {report.cutoff}, {report.freed_bytes / 1e6:.1f} MB")
    return 0
