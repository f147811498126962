"""`driftloop promote VERSION`, `driftloop rollback` and `driftloop history`: the champion by hand;
`driftloop lineage VERSION`: what a version was trained on, back to the feedback events.

Each moves the `champion` alias in one registry call, records who asked and why
(an append-only MLflow run), and puts the loop's state machine into cooldown, so
no automatic retrain fires right after a human decision. Refused, with nothing
changed, while a cycle holds the loop's lease.
"""

from __future__ import annotations

import argparse
import getpass

from driftloop.app.commands import config


def add_commands(sub) -> None:
    p = sub.add_parser("promote", help="point the champion alias at VERSION (recorded with who and why)")
    p.add_argument("version", help="registry version number")
    p.add_argument("--reason", required=True, help="why (recorded in the history)")
    p.add_argument("--by", default=None, help="who asks (default: the login name)")
    p.set_defaults(handler=promote)
    p = sub.add_parser("rollback", help="restore the previous champion")
    p.add_argument("--reason", required=True, help="why (recorded in the history)")
    p.add_argument("--by", default=None, help="who asks (default: the login name)")
    p.set_defaults(handler=rollback)
    p = sub.add_parser("history", help="every move of the champion alias: when, who, how and why")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(handler=history)
    p = sub.add_parser(
        "lineage", help="a version's training run, its datasets, and the feedback events behind each training item"
    )
    p.add_argument("version", help="registry version number or alias (champion, challenger)")
    p.add_argument("--json", action="store_true", help="print the lineage as one JSON object")
    p.set_defaults(handler=lineage)


def _who(args: argparse.Namespace) -> str:
    try:
        return args.by or getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


def _move(args: argparse.Namespace, version: str | None, how: str) -> int:
    from driftloop.services.promotion import move_champion
    from driftloop.store import Store
    from driftloop.tracking import Tracker

    cfg = config(args)
    store = Store(cfg.store_url)
    store.migrate()
    m = move_champion(cfg, store, Tracker.from_config(cfg), version, how, _who(args), args.reason)
    print(f"champion: version {m.previous or '-'} -> {m.version} ({how} by {m.who}); the loop is in cooldown")
    return 0


def promote(args: argparse.Namespace) -> int:
    return _move(args, args.version, "manual")


def rollback(args: argparse.Namespace) -> int:
    return _move(args, None, "rollback")


def history(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from driftloop.tracking import Tracker

    tr = Tracker.from_config(config(args))
    t = Table(title=f"champion history of {tr.model_name}")
    for c in ("when (UTC)", "version", "replaced", "how", "by", "reason"):
        t.add_column(c)
    for h in tr.champion_history(args.limit):
        t.add_row(h["at"], h["version"], h["previous"] or "-", h["how"], h["by"], h["reason"][:120])
    import sys

    # Piped output keeps whole reasons on one line each (rich would wrap at 80 columns).
    Console(width=None if sys.stdout.isatty() else 240).print(t)
    return 0


def lineage(args: argparse.Namespace) -> int:
    from driftloop.services.lineage import lineage as find
    from driftloop.store import Store
    from driftloop.tracking import Tracker

    cfg = config(args)
    store = Store(cfg.store_url)
    store.migrate()
    lin = find(store, Tracker.from_config(cfg), args.version)
    if args.json:
        print(lin.model_dump_json(indent=2))
        return 0
    print(f"version {lin.version} ({lin.origin or 'unknown origin'}, {lin.status or 'no status'}): {lin.model_uri}")
    if lin.base_version:
        print(f"  fine-tuned from version {lin.base_version}, objective {lin.objective or '-'}")
    print(f"  run {lin.run_id or '-'}")
    for d in lin.datasets:
        rows = f", {d.rows} rows" if d.rows is not None else ""
        print(f"  dataset {d.name} ({d.context}{rows}) digest {d.digest[:16]} from {d.source_type} {d.source}")
    events = lin.event_ids()
    print(f"  {len(lin.items)} training items from {len(events)} feedback events")
    for item in lin.items:
        refs = ", ".join(f"{e.event_id} ({e.source or 'not in the store'})" for e in item.events) or "no event"
        print(f"    {item.item}: {refs}")
    return 0
