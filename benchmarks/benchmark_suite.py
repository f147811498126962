"""Benchmark suite start-up and cache: driftloop against lm-eval's defaults, side by side.

Two ratios, each measured in this one process:

1. Start-up: the TaskManager driftloop builds for a suite (evaluators/tasks plus the
   one built-in folder the suite names, here bbq) against lm-eval's default
   `TaskManager()`, which indexes every built-in YAML (~13,900 files). Goal: < 1 s.
2. Cache: the first run of a suite (canary, 120 items, and BBQ's Religion file,
   `--bbq-limit` items x 12 choices) with `evaluators.cache.evaluate_cached` on a
   fresh SQLite store, against the rerun of the same suite on the same model, which
   the store answers without loading the model. Goal: >= 50x faster.

    .venv/bin/python benchmarks/benchmark_suite.py --model .pytest_cache/d/driftloop-benchmark-demo-model
    .venv/bin/python benchmarks/benchmark_suite.py --bbq-dir ../shared/data/bbq --bbq-limit 100

Without `--model` the demo model is built (or reused) in .driftloop/benchmark-model
(~30 s). Without the BBQ folder the suite is the canary alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

# Offline and quiet, as the CLI runs (driftloop.app.cli.DEFAULT_ENV): no hub, no per-batch bars.
for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TQDM_DISABLE"):
    os.environ.setdefault(_k, "1")

import torch  # noqa: E402

from driftloop.core.config import TaskSpec  # noqa: E402
from driftloop.store import Store  # noqa: E402
from evaluators.benchmark import TASKS_DIR, make_task_manager  # noqa: E402
from evaluators.builtin import builtin_task_dir  # noqa: E402
from evaluators.cache import evaluate_cached, model_fingerprint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    """Median wall time of `repeat` calls, in seconds, and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def startup(builtin: list[str]) -> tuple[float, float, int, int]:
    """(ours s, default s, tasks ours, tasks default); lm-eval's import is paid before either clock."""
    from lm_eval.tasks import TaskManager

    folders = [TASKS_DIR, *(builtin_task_dir(b) for b in builtin)]
    ours, tm = timed(lambda: make_task_manager(folders), repeat=3)
    default, full = timed(lambda: TaskManager(), repeat=1)  # ~12 s: once
    return ours, default, len(tm.all_tasks), len(full.all_tasks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: build the demo model)")
    ap.add_argument("--bbq-dir", default=str(ROOT.parent / "shared" / "data" / "bbq"))
    ap.add_argument("--bbq-limit", type=int, default=100, help="BBQ items in the suite")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2-core box shared with others: 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = Path(args.model) if args.model else None
    if model is None:
        from retrain.base_model import build_demo_model

        model = build_demo_model(ROOT / ".driftloop" / "benchmark-model")
    bbq = Path(args.bbq_dir)
    plan = [("canary", TaskSpec(name="driftloop_canary"))]
    if (bbq / "Religion.jsonl").is_file():
        plan.append(
            (
                "bias",
                TaskSpec(
                    name="bbq", kind="builtin", data_dir=str(bbq), data_files=["Religion.jsonl"], limit=args.bbq_limit
                ),
            )
        )
    else:
        print(f"(no BBQ data at {bbq}: canary only)")

    import lm_eval.tasks  # noqa: F401  (~2 s import, the same for both sides)

    ours, default, n_ours, n_default = startup(["bbq"] if len(plan) > 1 else [])
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/store.db")
        store.migrate()

        def run():
            fp = model_fingerprint(model)  # part of every run: a cached rerun still hashes the weights
            return evaluate_cached(store, model, fp, plan, [TASKS_DIR], model_id="bench", batch_size=16)

        first, (res1, ran1) = timed(run)
        cached, (res2, ran2) = timed(run, repeat=5)
    assert ran1 is not None and ran2 is None and all(r.cached for r in res2)
    assert [r.samples.items for r in res1] == [r.samples.items for r in res2]
    items = sum(len(r.samples.items) for r in res1)

    print(
        f"machine: {torch.get_num_threads()} torch thread(s); tasks: {', '.join(s.name for _, s in plan)}; "
        f"{items} items"
    )
    print("| measure | driftloop | baseline | ratio | goal |")
    print("|---|---|---|---|---|")
    print(
        f"| TaskManager start-up ({n_ours} vs {n_default} tasks indexed) | {ours:.3f} s | "
        f"{default:.2f} s (lm-eval TaskManager()) | {default / ours:.0f}x faster | < 1 s: "
        f"{'met' if ours < 1 else 'missed'} |"
    )
    print(
        f"| suite rerun, cached vs first run | {cached:.3f} s | {first:.1f} s (first run) | "
        f"{first / cached:.0f}x faster | >= 50x: {'met' if first / cached >= 50 else 'missed'} |"
    )


if __name__ == "__main__":
    main()
