"""`driftloop dashboard`: build the loop timeline page from what MLflow recorded.

$ driftloop dashboard --out timeline.html --mlflow-url http://mlflow.internal:5000
timeline of 12 cycles written to timeline.html
"""

from __future__ import annotations

import argparse
from pathlib import Path

from driftloop.app.commands import config


def add_commands(sub) -> None:
    p = sub.add_parser("dashboard", help="build the loop timeline page (self-contained HTML)")
    p.add_argument("--out", default=None, help="output file (default: <state_dir>/timeline.html)")
    p.add_argument(
        "--mlflow-url",
        default=None,
        help="MLflow UI address used in the links (default: alerts.mlflow_ui_url, an http(s) tracking "
        "URI, else http://localhost:5000)",
    )
    p.set_defaults(handler=dashboard)


def dashboard(args: argparse.Namespace) -> int:
    from dashboards.timeline import build_timeline
    from driftloop.core.errors import InputError
    from driftloop.tracking import Tracker

    cfg = config(args)
    html, cycles = build_timeline(Tracker.from_config(cfg), cfg, args.mlflow_url)
    out = Path(args.out) if args.out else cfg.state_path / "timeline.html"
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(out)  # never a half-written page
    except OSError as e:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        raise InputError(f"--out {out}: cannot write the page: {e.strerror or e}") from None
    print(f"timeline of {cycles} cycles written to {out}")
    return 0
