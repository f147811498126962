"""`driftloop dashboard`: build the loop timeline page from what MLflow recorded."""

from __future__ import annotations

import argparse
from pathlib import Path

from driftloop.commands import config


def add_commands(sub) -> None:
    p = sub.add_parser("dashboard", help="build the loop timeline page (self-contained HTML)")
    p.add_argument("--out", default=None, help="output file (default: <state_dir>/timeline.html)")
    p.add_argument("--mlflow-url", default="http://localhost:5000", help="MLflow UI address used in the links")
    p.set_defaults(handler=dashboard)


def dashboard(args: argparse.Namespace) -> int:
    from dashboards.timeline import timeline_html
    from driftloop.tracking import Tracker

    cfg = config(args)
    tr = Tracker.from_config(cfg)
    history = tr.cycle_history()
    seg = cfg.monitor.segment_fields[0] if cfg.monitor.segment_fields else None
    html = timeline_html(history, cfg.policy.floors, args.mlflow_url, tr.experiment_id, seg, cfg.project)
    out = Path(args.out) if args.out else cfg.state_path / "timeline.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)  # never a half-written page
    print(f"timeline of {len(history)} cycles written to {out}")
    return 0
