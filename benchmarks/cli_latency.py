"""End-to-end latency of the `driftloop` command, beside two other CLIs of the stack.

Times whole processes (wall time of the subprocess, from spawn to exit), the way a
user or a cron job sees them, so interpreter start-up, imports and any server the
command starts are all counted. Each command runs once untimed (warm page cache),
then `--runs` times; the table shows the median, min and max and whether the goal is met:

    driftloop --help                     <= 0.5 s
    driftloop status                     <= 1.5 s   (on the store made by a prior `driftloop ingest`)
    driftloop benchmark (cached)         <= 3.0 s   (the same suite and model benchmarked once before)
    lm_eval --help, prefect version      no goal: what the stack's own CLIs cost on this host

Usage:

    $ .venv/bin/python benchmarks/cli_latency.py                 # median of 5
    $ .venv/bin/python benchmarks/cli_latency.py --runs 3 --model .driftloop/cache/demo-model

Set-up (untimed): a work folder with the default config, 60 simulated feedback events
ingested, the demo model (built offline in about a minute, or the `--model` folder given)
and one uncached `driftloop benchmark --suite canary` run to fill the result cache. No
Prefect API is configured (PREFECT_API_URL is removed from the environment), which is the
case the goals are about. Exit status 1 when a goal is not met.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env(work: Path) -> dict[str, str]:
    """The environment of every timed process: no configured Prefect API, state under `work`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLOOP_", "PREFECT_"))}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(
        {
            "PREFECT_HOME": str(work / "prefect-home"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    return env


def _run(cmd: list[str], work: Path, check: bool = True) -> float:
    """Wall time (s) of one process running `cmd` in `work`; output is discarded unless it fails."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=work, env=_env(work), capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if check and p.returncode != 0:
        sys.exit(f"cli_latency: {' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return dt


def prepare(work: Path, model: Path | None) -> Path:
    """Config, feedback, store, demo model and a filled benchmark cache in `work`; returns the model folder."""
    from datetime import UTC, datetime, timedelta

    from driftloop.demo.world import simulate

    shutil.copy(ROOT / "driftloop.yaml", work / "driftloop.yaml")
    feedback = work / ".driftloop" / "feedback"
    feedback.mkdir(parents=True, exist_ok=True)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    events = simulate(seed=0, start=start, baseline_days=1, shifted_days=1, per_day=30, shifted_per_day=30)
    (feedback / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events[:60]), encoding="utf-8")
    print(f"set-up in {work}: ingest 60 events", flush=True)
    _run([str(BIN / "driftloop"), "ingest"], work)
    if model is None:
        from retrain.base_model import build_demo_model

        print("set-up: the demo model (built once, offline)", flush=True)
        model = build_demo_model(work / ".driftloop" / "cache" / "demo-model")
    print("set-up: one uncached benchmark run fills the result cache", flush=True)
    _run([str(BIN / "driftloop"), "benchmark", "--suite", "canary", "--model", str(model)], work)
    return Path(model)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per command (the median is reported)")
    ap.add_argument(
        "--model", type=Path, default=None, help="a model folder to benchmark (default: build the demo model)"
    )
    ap.add_argument("--workdir", type=Path, default=None, help="work folder (default: a temporary one, removed after)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="driftloop-cli-latency-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model = prepare(work, args.model.resolve() if args.model else None)
        dl = str(BIN / "driftloop")
        cases = [
            ("driftloop --help", [dl, "--help"], 0.5),
            ("driftloop status", [dl, "status"], 1.5),
            ("driftloop benchmark (cached)", [dl, "benchmark", "--suite", "canary", "--model", str(model)], 3.0),
            ("lm_eval --help", [str(BIN / "lm_eval"), "--help"], None),
            ("prefect version", [str(BIN / "prefect"), "version"], None),
        ]
        rows = []
        for name, cmd, goal in cases:
            _run(cmd, work)  # warm-up, untimed
            times = [_run(cmd, work) for _ in range(args.runs)]
            rows.append(
                {
                    "command": name,
                    "median_s": statistics.median(times),
                    "min_s": min(times),
                    "max_s": max(times),
                    "goal_s": goal,
                }
            )
            print(f"  {name}: {statistics.median(times):.2f} s", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nwall time of whole processes, median of {args.runs} ({os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]})\n"
    )
    print(f"{'command':<30} {'median s':>9} {'min s':>7} {'max s':>7} {'goal s':>7}  met")
    for r in rows:
        goal = "-" if r["goal_s"] is None else f"{r['goal_s']:.1f}"
        met = "-" if r["goal_s"] is None else ("met" if r["median_s"] <= r["goal_s"] else "NOT MET")
        r["met"] = None if r["goal_s"] is None else r["median_s"] <= r["goal_s"]
        print(f"{r['command']:<30} {r['median_s']:>9.2f} {r['min_s']:>7.2f} {r['max_s']:>7.2f} {goal:>7}  {met}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r["met"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
