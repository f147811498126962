"""Benchmark: benchmark suites serial against a Dask cluster, side by side in one process.

The `benchmark` flow runs `--suites` suites on one model, each suite one task of
`--items` canary-format items (the canary, then copies of it under other task names),
`--repeat` times per runner (after an untimed warm-up run), each on a fresh state folder so nothing is served from the cache:

1. serial: every suite in one lm-eval call in this process (the model loaded once);
   torch uses `--threads` threads;
2. dask, new cluster: `runner: {kind: dask}`, the flow starts a LocalCluster of
   `--workers` processes (1 torch thread each) and closes it: what one run pays;
3. dask, running cluster: the same against a LocalCluster started beforehand
   (`runner.address`) and warmed by one untimed run, so worker start-up and imports
   are paid before the clock.

It checks that every runner produced the serial run's per-item results, then prints
each wall time and its ratio to the serial one (> 1 means faster than serial). On a
2-core machine two workers have no spare core to gain from; run it alone:

    .venv/bin/python benchmarks/parallel_suites.py --model .pytest_cache/d/driftloop-demo-model
    .venv/bin/python benchmarks/parallel_suites.py --suites 4 --workers 4 --json out.json

`--segments` instead measures the monitor's per-segment quality (evaluators.quality) on
`--rows` events against the cost of shipping the window frame to a worker (a pickle round
trip), which is what a per-segment split over Dask workers would pay first.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Offline and quiet, as the CLI runs: no hub, no per-batch bars.
for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TQDM_DISABLE"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_suites(folder: Path, n_suites: int, items: int) -> list[str]:
    """Task YAMLs `driftloop_canary_2..n` (copies of the canary) in `folder`; all task names."""
    from evaluators.benchmark import TASKS_DIR

    text = (TASKS_DIR / "driftloop_canary.yaml").read_text()
    names = ["driftloop_canary"]
    for k in range(2, n_suites + 1):
        name = f"driftloop_canary_{k}"
        (folder / f"{name}.yaml").write_text(
            text.replace("task: driftloop_canary", f"task: {name}").replace(
                "test: canary.jsonl", f"test: {TASKS_DIR / 'canary.jsonl'}"
            )
        )
        names.append(name)
    return names


def config(folder: Path, task_dir: Path, names: list[str], items: int, runner: str) -> Path:
    folder.mkdir(parents=True)
    suites = "".join(
        f"    s{k}: {{role: canary, tasks: [{{name: {n}, limit: {items}}}]}}\n" for k, n in enumerate(names)
    )
    p = folder / "driftloop.yaml"
    p.write_text(
        f"project: bench\nstate_dir: state\nbenchmark:\n  batch_size: 16\n  task_dirs: [{task_dir}]\n"
        f"  suites:\n{suites}runner: {runner}\n"
    )
    return p


def suites_bench(args) -> dict:
    import distributed
    import torch
    from prefect.testing.utilities import prefect_test_harness

    from flows.benchmark import BenchmarkParams, benchmark

    torch.set_num_threads(args.threads)
    model = Path(args.model) if args.model else None
    if model is None:
        from retrain.base_model import build_demo_model

        model = build_demo_model(ROOT / ".driftloop" / "benchmark-model")
    out: dict = {
        "suites": args.suites,
        "items_per_suite": args.items,
        "workers": args.workers,
        "serial_torch_threads": args.threads,
        "cpus": os.cpu_count(),
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180):
        tmp = Path(tmp)
        (tmp / "tasks").mkdir()
        names = write_suites(tmp / "tasks", args.suites, args.items)
        lc = distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        # Not the default client: prefect-dask would join its cluster instead of starting a new one.
        client = distributed.Client(lc, set_as_default=False)
        try:
            runners = {
                "serial": "{kind: serial}",
                "dask, new LocalCluster": f"{{kind: dask, n_workers: {args.workers}}}",
                "dask, running cluster": f"{{kind: dask, address: '{lc.scheduler_address}'}}",
            }
            # Warm-up, off the clock: imports, MLflow and Prefect databases, first model load, here and in
            # the running cluster's workers (that is what "running" means).
            for k, runner in enumerate(("{kind: serial}", runners["dask, running cluster"])):
                benchmark(
                    BenchmarkParams(
                        config=str(config(tmp / f"warm-up-{k}", tmp / "tasks", names, 2, runner)), model=str(model)
                    )
                )
            base, times = None, {label: [] for label in runners}
            for k in range(args.repeat):  # runners interleaved, so a busy spell hits them all alike
                for label, runner in runners.items():
                    folder = tmp / f"{label.replace(' ', '_').replace(',', '')}-{k}"
                    cfg = config(folder, tmp / "tasks", names, args.items, runner)
                    t0 = time.perf_counter()
                    res = benchmark(BenchmarkParams(config=str(cfg), model=str(model)))
                    times[label].append(time.perf_counter() - t0)
                    items = {s: [x.items for x in v] for s, v in res.samples.items()}
                    base = base or items
                    assert items == base, f"{label}: per-item results differ from the serial run"
                    out["runs"][label] = {"pids": sorted({p.pid for p in res.executed_on.values()})}
                    print(f"{label}: {times[label][-1]:.1f} s", flush=True)
            for label, ts in times.items():
                out["runs"][label].update(
                    seconds=round(statistics.median(ts), 2), all_seconds=[round(t, 2) for t in ts]
                )
        finally:
            client.close()
            lc.close()
    serial = out["runs"]["serial"]["seconds"]
    print(
        f"\n{args.suites} suites x {args.items} items, demo model, {os.cpu_count()} CPUs, {args.workers} workers; "
        f"serial: {args.threads} torch thread(s); median of {args.repeat}"
    )
    print("| runner | wall time | serial / runner |")
    print("|---|---|---|")
    for label, r in out["runs"].items():
        r["speedup_vs_serial"] = round(serial / r["seconds"], 2)
        print(f"| {label} | {r['seconds']:.1f} s | {r['speedup_vs_serial']:.2f}x |")
    return out


def segments_bench(args) -> dict:
    import numpy as np
    import pandas as pd

    from evaluators.quality import quality_metrics

    rng = np.random.default_rng(0)
    n = args.rows
    frame = pd.DataFrame(
        {
            "thumbs_up": rng.random(n) < 0.8,
            "has_correction": rng.random(n) < 0.1,
            "rating": rng.integers(0, 5, n) / 4,  # 1-5 stars -> [0, 1]
            "topic": rng.choice(list("abcdef"), n),
            "locale": rng.choice(["en", "de", "fr", "es"], n),
            "tier": rng.choice(["free", "pro", "ent"], n),
        }
    )
    fields = ["topic", "locale", "tier"]
    quality_metrics(frame.head(1000), fields)  # first-call overhead off the clock
    t0 = time.perf_counter()
    results = quality_metrics(frame, fields)
    whole = time.perf_counter() - t0
    t0 = time.perf_counter()
    blob = pickle.dumps(frame, protocol=5)
    pickle.loads(blob)
    ship = time.perf_counter() - t0
    out = {
        "rows": n,
        "segment_fields": fields,
        "results": len(results),
        "quality_seconds": round(whole, 3),
        "pickle_round_trip_seconds": round(ship, 3),
        "frame_mb": round(len(blob) / 1e6, 1),
    }
    print(
        f"{n:,} events, {len(fields)} segment fields ({len(results)} results): per-segment quality "
        f"{whole * 1000:.0f} ms in one process; shipping the frame once costs {ship * 1000:.0f} ms "
        f"({len(blob) / 1e6:.0f} MB pickle round trip)"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: build the demo model)")
    ap.add_argument("--suites", type=int, default=2, help="suites, one task each")
    ap.add_argument("--items", type=int, default=120, help="items per suite (the canary has 120)")
    ap.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the serial run")
    ap.add_argument("--repeat", type=int, default=1, help="runs per runner (median reported)")
    ap.add_argument("--segments", action="store_true", help="measure per-segment quality instead")
    ap.add_argument("--rows", type=int, default=1_000_000, help="--segments: events in the window")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    out = segments_bench(args) if args.segments else suites_bench(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
