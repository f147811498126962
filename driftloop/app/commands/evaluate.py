"""`driftloop evaluate`: monitor the feedback window and benchmark one model now, in one MLflow run.

    $ driftloop evaluate                                   # the champion, every suite, monitor.windows
    $ driftloop evaluate --model 3 --suite canary --window 7d
    $ driftloop evaluate --model challenger --window 2025-01-01..2025-01-08
    $ driftloop evaluate --model ./models/candidate        # a local model folder

Bad input (a model that is neither an alias, a version nor a model folder, an unknown
suite, a malformed window) prints one line and exits 2 before anything runs.
"""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from driftloop.app.commands import config


def add_commands(sub) -> None:
    p = sub.add_parser("evaluate", help="monitor and benchmark a model now (champion, challenger, VERSION or PATH)")
    p.add_argument(
        "--model", default="champion", help="champion, challenger, a registry version number, or a local model folder"
    )
    p.add_argument("--suite", action="append", default=None, help="benchmark suite (repeatable; default: all)")
    p.add_argument(
        "--window",
        default=None,
        help="feedback window: Nd or Nh (the last N days/hours) or START..END (ISO dates, END exclusive); "
        "default: monitor.windows",
    )
    p.set_defaults(handler=evaluate)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _value(m) -> str:
    if m.ci_low is None or m.ci_high is None:
        return _fmt(m.value)
    return f"{_fmt(m.value)} [{_fmt(m.ci_low)}, {_fmt(m.ci_high)}]"


def _seg(m) -> str:
    return ",".join(f"{k}={v}" for k, v in m.segment.items() if k not in ("suite", "role")) or "all"


def results_table(res) -> Table:
    """Benchmark scores per suite, then the monitor's quality and bias figures, the drifted
    columns and the drifted share: each value with its 95 % interval and n."""
    mon = res.monitor or {}
    version = f"version {res.version}" if res.version else res.model_path
    t = Table(title=escape(f"evaluation of {res.model} ({version})"))
    for c in ("part", "metric", "segment", "value [95% CI]", "n", "note"):
        t.add_column(c, overflow="fold")

    def row(part: str, m, segment: str, value: str, note: str) -> None:
        # escape: "[topic=billing]"-like text would otherwise be read as rich markup and vanish.
        t.add_row(part, escape(m.name), escape(segment), escape(value), str(m.n), escape(note))

    for suite, metrics in res.suites.items():
        for m in metrics:
            row(f"benchmark {suite}", m, _seg(m), _value(m), m.note)
    for m in res.metrics:
        if m.source in ("quality", "bias"):
            row(m.source, m, _seg(m), _value(m), m.note)
        elif m.source == "drift" and m.name == "drifted_share":
            row("drift", m, "all", _fmt(m.value), m.note)
        elif m.source == "drift" and m.passed is False:
            row("drift", m, m.segment.get("column", ""), _fmt(m.value), "DRIFT: " + m.note)
    w = mon.get("windows") or {}
    t.caption = escape(
        f"feedback: {mon.get('n_current', 0)} current vs {mon.get('n_reference', 0)} reference events"
        + (
            f", current {w.get('current_start', '')[:19]} .. {w.get('current_end', '')[:19]}"
            f" ({w.get('reference_source', '')})"
            if w
            else ""
        )
    )
    return t


def evaluate(args: argparse.Namespace) -> int:
    from driftloop.app.report import console

    cfg = config(args)
    from flows.common import run_flow, use_engine
    from flows.evaluate import evaluate as run
    from flows.evaluate import preflight

    preflight(args.model, args.suite, args.window, args.config)  # bad input fails here, before Prefect starts
    with console.status(
        f"evaluating {args.model}: monitor on the feedback window, then the benchmark suites "
        "(lm-eval runs only uncached tasks)"
    ):
        res = run_flow(
            run, model=args.model, suites=args.suite, window=args.window, config=args.config, engine=use_engine(cfg)
        )
    console.print(results_table(res))
    console.print(escape(f"MLflow run {res.run_id} ({res.link})"))
    return 0
