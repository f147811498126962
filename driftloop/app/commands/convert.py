"""`driftloop convert-pairs`: preference-pair files (HH-RLHF style) as ordinary feedback JSONL."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(sub) -> None:
    p = sub.add_parser(
        "convert-pairs",
        help="turn preference pairs (chosen/rejected conversations, e.g. HH-RLHF) into feedback JSONL: "
        "two rated events per pair, thumbs up for the chosen reply, down for the rejected",
    )
    p.add_argument("source", type=Path, help="JSONL or JSONL.gz, one pair per line")
    p.add_argument("dest", type=Path, help="feedback JSONL to write (e.g. into a file source's folder)")
    p.add_argument("--chosen", default="chosen", help="field of the preferred conversation (default: chosen)")
    p.add_argument("--rejected", default="rejected", help="field of the other one (default: rejected)")
    p.add_argument("--limit", type=int, default=None, help="read only the first N pairs")
    p.add_argument(
        "--max-chars",
        type=int,
        default=None,
        help="skip pairs whose prompt plus longer reply exceeds N characters (a small model's context)",
    )
    p.add_argument("--source-tag", default="", help="segment.source of the events (default: the file's name)")
    p.set_defaults(handler=convert)


def convert(args: argparse.Namespace) -> int:
    from driftloop.app import report
    from driftloop.ingest.pairs import convert_pairs

    s = convert_pairs(
        args.source, args.dest, args.chosen, args.rejected, args.limit, source=args.source_tag, max_chars=args.max_chars
    )
    skipped = ", ".join(f"{why} x{n}" for why, n in sorted(s.skipped.items())) or "none"
    report.console.print(f"{s.pairs} pairs -> {s.events} events in {args.dest}; skipped: {skipped}")
    return 0
