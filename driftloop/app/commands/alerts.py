"""`driftloop alerts list|retry|discard|test`: the dead-letter table and the configured webhooks.

    $ driftloop alerts test                 # a signed `alert.test` event to every webhook
    $ driftloop alerts list                 # undelivered dead letters (--all: delivered and discarded too)
    $ driftloop alerts retry --webhook ops  # re-send them; exit 1 if any still fail
    $ driftloop alerts discard --webhook old-hook   # or --id 3 --id 4: kept, never re-sent

Hosts are shown instead of URLs (chat webhook URLs carry tokens); secrets are never printed.
"""

from __future__ import annotations

import argparse

from driftloop.app.commands import config


def add_commands(sub) -> None:
    p = sub.add_parser("alerts", help="alert webhooks: send a test event, list, re-send or discard dead letters")
    asub = p.add_subparsers(dest="alerts_cmd", required=True, metavar="ACTION")
    q = asub.add_parser("list", help="webhooks and undelivered dead letters")
    q.add_argument("--all", action="store_true", help="include dead letters already re-sent or discarded")
    q.add_argument("--webhook", default=None, help="only this webhook's dead letters")
    q.set_defaults(handler=list_cmd)
    q = asub.add_parser("retry", help="re-send undelivered dead letters (exit 1 if any still fail)")
    q.add_argument("--webhook", default=None, help="only this webhook's dead letters")
    q.set_defaults(handler=retry)
    q = asub.add_parser("discard", help="stop re-sending dead letters (e.g. of a removed webhook); they stay listed")
    q.add_argument("--id", type=int, action="append", dest="ids", metavar="ID", help="this dead letter (repeatable)")
    q.add_argument("--webhook", default=None, help="every pending dead letter of this webhook")
    q.set_defaults(handler=discard)
    q = asub.add_parser("test", help="send a signed alert.test event (exit 1 if a webhook fails)")
    q.add_argument("--webhook", default=None, help="only this webhook (default: every one)")
    q.set_defaults(handler=test)


def _setup(args: argparse.Namespace, need_webhooks: bool):
    from driftloop.core.errors import ConfigError, InputError
    from driftloop.store import Store

    cfg = config(args)
    names = [w.name for w in cfg.alerts.webhooks]
    if need_webhooks and not names:
        raise ConfigError("alerts.webhooks: no webhook is configured")
    if args.webhook is not None and args.webhook not in names and need_webhooks:
        raise InputError(
            f"--webhook {args.webhook}: no such webhook in alerts.webhooks (have: {', '.join(names) or 'none'})"
        )
    store = Store(cfg.store_url)
    store.migrate()
    return cfg, store


def _console():
    import sys

    from rich.console import Console

    # Piped output keeps each row on one line (rich would wrap at 80 columns).
    return Console(width=None if sys.stdout.isatty() else 200)


def list_cmd(args: argparse.Namespace) -> int:
    from rich.table import Table

    from driftloop.alerts.notify import host
    from driftloop.store import deadletter

    cfg, store = _setup(args, need_webhooks=False)
    con = _console()
    t = Table(title="webhooks")
    for c in ("name", "host", "format", "events", "secret from"):
        t.add_column(c)
    for w in cfg.alerts.webhooks:
        t.add_row(
            w.name,
            host(w.url),
            w.format,
            ", ".join(w.events) if w.events else "all",
            f"env {w.secret_env}" if w.secret_env else f"file {w.secret_file}",
        )
    con.print(t)
    rows = deadletter.rows(store, args.webhook, include_delivered=args.all)
    t = Table(title=f"dead letters ({'all' if args.all else 'undelivered'})")
    for c in ("id", "created (UTC)", "webhook", "host", "event", "event id", "attempts", "last error", "state"):
        t.add_column(c)
    for r in rows:
        state = (
            f"delivered {r['delivered_at']:%Y-%m-%d %H:%M:%S}"
            if r["delivered_at"]
            else f"discarded {r['discarded_at']:%Y-%m-%d %H:%M:%S}"
            if r["discarded_at"]
            else "pending"
        )
        t.add_row(
            str(r["id"]),
            f"{r['created_at']:%Y-%m-%d %H:%M:%S}",
            r["webhook"],
            host(r["url"]),
            r["event_type"],
            r["event_id"],
            str(r["attempts"]),
            r["last_error"][:80],
            state,
        )
    con.print(t)
    con.print(f"{sum(r['delivered_at'] is None and r['discarded_at'] is None for r in rows)} undelivered")
    return 0


def discard(args: argparse.Namespace) -> int:
    from driftloop.core.errors import InputError
    from driftloop.store import deadletter

    if not args.ids and args.webhook is None:
        raise InputError("alerts discard: give --id ID (repeatable) or --webhook NAME")
    _, store = _setup(args, need_webhooks=False)
    pending = {r["id"] for r in deadletter.pending(store, args.webhook)}
    missing = [i for i in args.ids or [] if i not in pending]
    if missing:  # nothing is discarded: the command names what it could not find
        raise InputError(
            f"--id {missing[0]}: no pending dead letter with this id"
            + (f" for webhook {args.webhook}" if args.webhook else "")
            + " (see `driftloop alerts list --all`)"
        )
    done = deadletter.discard(store, args.ids or None, args.webhook)
    _console().print(
        f"{len(done)} dead letter(s) discarded" + (f": {', '.join(f'#{i}' for i in done)}" if done else "")
    )
    return 0


def retry(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from driftloop.alerts import resend
    from driftloop.core.errors import StageError
    from driftloop.store import deadletter

    cfg, store = _setup(args, need_webhooks=False)
    con = _console()
    total = len(deadletter.pending(store, args.webhook))
    if not total:
        con.print("no undelivered dead letters" + (f" for {args.webhook}" if args.webhook else ""))
        return 0
    with Progress(TextColumn("re-sending dead letters"), BarColumn(), MofNCompleteColumn(), console=con) as bar:
        task = bar.add_task("resend", total=total)

        def row_done(o) -> None:
            mark = "[green]delivered[/]" if o.ok else f"[red]failed[/] ({o.error})"
            bar.console.print(f"#{o.dead_letter_id} {o.webhook}: {mark} after {o.attempts} attempt(s)")
            bar.advance(task)

        outcomes = resend(cfg, store, args.webhook, on_row=row_done)
    failed = [o for o in outcomes if not o.ok]
    con.print(f"{len(outcomes) - len(failed)} delivered, {len(failed)} still failing")
    if failed:
        raise StageError(
            f"alerts retry: {len(failed)} dead letter(s) still undelivered "
            f"(first: #{failed[0].dead_letter_id} to {failed[0].webhook}: {failed[0].error})"
        )
    return 0


def test(args: argparse.Namespace) -> int:
    from driftloop.alerts import make_event, notify
    from driftloop.alerts.notify import host
    from driftloop.core.errors import StageError

    cfg, store = _setup(args, need_webhooks=True)
    con = _console()
    ev = make_event(
        cfg,
        "alert.test",
        summary=f"Test alert from driftloop project {cfg.project}",
        reasons=["sent by `driftloop alerts test`"],
    )
    targets = [w for w in cfg.alerts.webhooks if args.webhook in (None, w.name)]
    failed = []
    for w in targets:
        with con.status(f"sending a test event to {w.name} ({host(w.url)})"):
            (o,) = notify(cfg, store, ev, only=w.name, dead_letter=False)
        con.print(
            f"{w.name} ({host(w.url)}): "
            + (
                f"[green]delivered[/] (HTTP {o.status}, {o.attempts} attempt(s))"
                if o.ok
                else f"[red]failed[/] after {o.attempts} attempt(s): {o.error}"
            )
        )
        if not o.ok:
            failed.append(o)
    if failed:
        raise StageError(
            f"alerts test: {len(failed)} of {len(targets)} webhook(s) failed (first: {failed[0].webhook}: {failed[0].error})"
        )
    return 0
