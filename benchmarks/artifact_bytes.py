"""Benchmark: bytes a day of the shipped schedules writes to the state folder, with the retention
settings that reproduce the old behaviour and with the recommended ones.

The shipped schedules (prefect.yaml) run an ingest every 15 minutes, a monitor every hour and
one loop cycle a day. This runs that work on a small local world (the demo's simulated feedback,
a one-layer GPT-2 with the demo's tokenizer), with the flows' real functions and Prefect's engine
off, as the CLI runs them without a Prefect API (`flows.common.plain_calls`):

- `before`: every monitor run stores Evidently's HTML report and workspace snapshot, and every
  cycle its timeline page (the defaults, as before the `retention:` settings existed);
- `html-daily`: `retention.drift_html: on_drift_or_daily` alone;
- `recommended`: that, plus `retention.workspace_snapshots: on_drift_or_daily` and
  `retention.timeline: on_demand` (`driftloop dashboard` builds the page when someone asks).

Each call's bytes are the growth of the state folder (MLflow's artifacts, its SQLite database,
the feedback store, caches) across the call. The feedback file is ingested once before the
measured day, so the 15-minute ingests find nothing new, as most of them do in production.
A simulated day is H hourly monitor runs; the "once a day" clock of `on_drift_or_daily` is
advanced by ageing its marker file by a day at each simulated day's start.

    .venv/bin/python benchmarks/artifact_bytes.py            # one day: 24 monitors, 96 ingests, 1 cycle
    .venv/bin/python benchmarks/artifact_bytes.py --smoke    # 2 monitors, 2 ingests, no cycle (a test)

A day is extrapolated from the calls' averages where fewer ran (`--smoke`, `--hours`): 96
ingests, 24 monitor runs (as many with the HTML report as a measured day stored) and one cycle.
The table and the ratios are printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# mode: the `retention:` settings it runs with
MODES = {
    "before": {"drift_html": "always", "workspace_snapshots": "every_run", "timeline": "every_cycle"},
    "html-daily": {"drift_html": "on_drift_or_daily", "workspace_snapshots": "every_run", "timeline": "every_cycle"},
    "recommended": {
        "drift_html": "on_drift_or_daily",
        "workspace_snapshots": "on_drift_or_daily",
        "timeline": "on_demand",
    },
}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tiny_model(folder: Path) -> Path:
    """A random-init one-layer GPT-2 with the demo's tokenizer (what the tests build)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from driftloop.demo import world
    from retrain.base_model import build_tokenizer

    tok = build_tokenizer(world.tokenizer_corpus(0))
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def world(folder: Path, model: Path, retention: dict[str, str]) -> Path:
    """A config and a week of healthy feedback (no drift) ending now: the config's path."""
    from driftloop.demo.world import simulate

    (folder / "feedback").mkdir(parents=True)
    start = datetime.now(UTC) - timedelta(days=7)
    events = simulate(seed=0, start=start, baseline_days=7, shifted_days=0, per_day=60)
    with open(folder / "feedback" / "events.jsonl", "w") as fh:
        for e in events:
            fh.write(json.dumps(e) + "\n")
    cfg = folder / "driftloop.yaml"
    cfg.write_text(
        f"""
project: bytes
state_dir: state
model: {{base: {model}}}
sources: [{{path: feedback/*.jsonl}}]
monitor: {{segment_fields: [topic, locale, tier]}}
policy: {{floors: {{thumbs_up_rate: 0.5}}, min_n: 30}}
retention: {json.dumps(retention)}
"""
    )
    return cfg


def age_marker(state: Path) -> None:
    """A simulated day has passed for `on_drift_or_daily`'s once-a-day clocks."""
    for name in ("last_drift_html", "last_workspace_snapshot"):
        marker = state / "monitor" / name
        if marker.exists():
            t = marker.stat().st_mtime - 86400
            os.utime(marker, (t, t))


def run_mode(folder: Path, model: Path, mode: str, days: int, hours: int, cycles: bool, ingests: int = 4) -> dict:
    """One mode's simulated days: bytes per call kind and per day."""
    from flows.common import StageParams, plain_calls
    from flows.ingest import ingest
    from flows.loop import loop
    from flows.monitor import monitor
    from flows.registry import ensure_champion

    cfg = world(folder, model, MODES[mode])
    params = StageParams(config=str(cfg))
    state = folder / "state"
    kinds = ("ingest", "monitor+html", "monitor", "cycle")
    written, calls = dict.fromkeys(kinds, 0), dict.fromkeys(kinds, 0)

    def measure(kind: str, fn: Callable, *args) -> None:
        before = folder_bytes(state)
        res = fn(*args)
        if kind == "monitor" and has_html(params, res.run_id):
            kind = "monitor+html"
        written[kind] += folder_bytes(state) - before
        calls[kind] += 1

    t0 = time.monotonic()
    with plain_calls(level=logging.WARNING):
        ingest(params)  # the week's feedback and the first champion, before the measured days
        if cycles:
            ensure_champion(params)
        for day in range(days):
            age_marker(state)
            if cycles:
                measure("cycle", loop, params)
            for _ in range(hours):
                for _ in range(ingests):
                    measure("ingest", ingest, params)
                measure("monitor", monitor, params)
            print(f"{mode}: day {day + 1}/{days} done ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    per_call = {k: written[k] / calls[k] if calls[k] else 0.0 for k in kinds}
    # A day of the shipped schedules: 96 ingests, 24 monitors (of which as many stored the HTML
    # report as did in a measured day, at most 24), 1 cycle. Where fewer monitors ran (--smoke,
    # --hours), the day is extrapolated from the calls' averages.
    html = 24.0 if MODES[mode]["drift_html"] == "always" else min(24.0, calls["monitor+html"] / days)
    per_day = (
        96 * per_call["ingest"]
        + html * per_call["monitor+html"]
        + (24 - html) * per_call["monitor"]
        + per_call["cycle"] * (1 if cycles else 0)
    )
    return {"calls": calls, "written": written, "per_call": per_call, "html_per_day": html, "per_day": per_day}


def has_html(params, run_id: str) -> bool:
    from flows.common import context

    return any(a.path == "drift_report.html" for a in context(params).tracker.client.list_artifacts(run_id))


def table(res: dict[str, dict]) -> str:
    head = f"{'':12} {'ingest':>9} {'monitor+html':>13} {'monitor':>9} {'cycle':>9} {'html/day':>9} {'per day':>9}"
    rows = ["kB per call; per day of 96 ingests, 24 monitors and 1 cycle in MB", head]
    for mode, r in res.items():
        pc = {k: v / 1e3 for k, v in r["per_call"].items()}
        rows.append(
            f"{mode:12} {pc['ingest']:>9.1f} {pc['monitor+html']:>13.1f} {pc['monitor']:>9.1f} {pc['cycle']:>9.1f} "
            f"{r['html_per_day']:>9.0f} {r['per_day'] / 1e6:>9.2f}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--hours", type=int, default=24, help="monitor runs per simulated day (4 ingests each)")
    ap.add_argument("--no-cycle", action="store_true", help="leave out the daily loop cycle")
    ap.add_argument("--ingests", type=int, default=4, help="ingests per simulated hour")
    ap.add_argument("--smoke", action="store_true", help="1 day of 2 hours, 1 ingest an hour, no cycle: for a test")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    if args.smoke:
        args.days, args.hours, args.ingests, args.no_cycle = 1, 2, 1, True
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with tempfile.TemporaryDirectory(prefix="driftloop-bytes-") as tmp:
        root = Path(tmp)
        model = tiny_model(root / "model")
        res = {
            mode: run_mode(root / mode, model, mode, args.days, args.hours, not args.no_cycle, args.ingests)
            for mode in MODES
        }
    ratios = {m: res["before"]["per_day"] / max(res[m]["per_day"], 1.0) for m in MODES if m != "before"}
    print(table(res))
    for m, ratio in ratios.items():
        print(f"bytes per day, before / {m}: {ratio:.1f}x")
    if args.json:
        args.json.write_text(json.dumps({"modes": res, "ratios": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
