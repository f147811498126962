"""`driftloop promote VERSION`, `driftloop rollback` and `driftloop history`: the champion by hand.

Each moves the `champion` alias in one registry call, records who asked and why
(an append-only MLflow run), and puts the loop's state machine into cooldown, so
no automatic retrain fires right after a human decision. Refused, with nothing
changed, while a cycle holds the loop's lease.
"""

from __future__ import annotations

import argparse
import getpass

from driftloop.commands import config


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


def _who(args: argparse.Namespace) -> str:
    try:
        return args.by or getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


def _move(args: argparse.Namespace, version: str | None, how: str) -> int:
    from datetime import datetime, timezone

    from driftloop.errors import InputError
    from driftloop.loopstate import Event, LoopMemory, advance
    from driftloop.store import Store
    from driftloop.tracking import Tracker

    cfg = config(args)
    tr = Tracker.from_config(cfg)
    store = Store(cfg.store_url)
    store.migrate()
    current = tr.alias_version("champion")
    if version is None:  # rollback: the version the current champion replaced
        last = next((h for h in tr.champion_history() if h["version"] == current), None)
        version = last["previous"] if last else None
        if not version:
            raise InputError(f"rollback: no earlier champion is recorded for version {current}")
    who = _who(args)
    owner = f"{how}:{who}"
    st = store.get_state(cfg.project)
    memory = LoopMemory.load(st["data"])
    # The new champion's traffic starts now; the loop forgets what it answered for the old one.
    memory.new_champion(str(version), datetime.now(timezone.utc), how)
    # Take the loop first: a cycle holding its lease would otherwise race this change.
    if not store.transition(cfg.project, advance(st["state"], Event.MANUAL),
                            f"{how} of version {version} by {who}: {args.reason}"[:500], owner, 0,
                            data=memory.dump(), expected={st["state"]}, expected_version=st["version"]):
        raise InputError(f"{how}: a cycle holds the loop (state {st['state']}, lease of {st['lease_owner']}); "
                         "retry when it ends")
    previous = tr.move_champion(version, by=who, reason=args.reason, how=how)
    print(f"champion: version {previous or '-'} -> {version} ({how} by {who}); the loop is in cooldown")
    _alert(cfg, store, tr, how, version, previous, who, args.reason)
    return 0


def _alert(cfg, store, tr, how: str, version: str, previous: str | None, who: str, reason: str) -> None:
    """`champion.rolled_back` or `candidate.promoted` (how=manual) to the webhooks; never raises."""
    from driftloop.alerts import send

    if not cfg.alerts.webhooks:
        return
    try:
        last = tr.champion_history(limit=1)  # the promotion run just written: the alert links to it
    except Exception:  # noqa: BLE001 - the move is done; an alert without a link beats a failed command
        last = []
    send(cfg, store, "champion.rolled_back" if how == "rollback" else "candidate.promoted",
         model_version=version, previous_version=previous, reasons=[f"{how} by {who}: {reason}"],
         run_id=last[0]["run_id"] if last else None, experiment_id=tr.experiment_id, data={"how": how, "by": who})


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
