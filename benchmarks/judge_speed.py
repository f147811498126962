"""Judge throughput: an `hf` judge's padded batches against one forward pass per verdict, same process.

Scores `--items` demo questions with their answers through the demo config's rubric on a
local causal LM (`--model`, default: the demo model under `.driftloop/cache/demo-model`,
built there if missing), twice on the same items:

- batched: `HFJudge.score`, what the monitor runs (texts in padded batches of up to 32);
- one by one: each verdict's log-probability in its own forward pass (`HFJudge.logprob`),
  the naive loop a hand-written judge would use.

Prints events per second of each, CPU seconds, the ratio, and the largest difference
between the two paths' scores (they must agree: padding changes no real token's logits).

    .venv/bin/python benchmarks/judge_speed.py                  # 400 items, torch's default threads
    .venv/bin/python benchmarks/judge_speed.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RUBRIC = "Question: {{ prompt }}\nAnswer: {{ response }}\nIs the answer correct?{{ verdict }}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=".driftloop/cache/demo-model", help="a local causal-LM folder")
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from driftloop.core.config import JudgeSpec
    from driftloop.demo import world
    from evaluators.judges.backends import make_judge, verdict_probability
    from evaluators.judges.rubric import Item
    from retrain.base_model import build_demo_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = Path(args.model)
    if not model.is_dir():
        print(f"building the demo model in {model} (about a minute)", flush=True)
        model = build_demo_model(model)
    events = world.simulate(seed=0)[: args.items]
    items = [Item(e["prompt"], e.get("response") or "") for e in events]
    judge = make_judge(JudgeSpec(name="bench", rubric=RUBRIC, backend={"kind": "hf", "model": str(model)}), Path("."))
    judge.score(items[:2])  # load the model outside the timers

    def timed(fn):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        return out, time.perf_counter() - wall, time.process_time() - cpu

    def one_by_one() -> list[float]:
        out = []
        for i in items:
            ctx = judge.rubric.context(i)
            out.append(verdict_probability(judge.logprob(ctx, judge.rubric.good), judge.logprob(ctx, judge.rubric.bad)))
        return out

    single, s_wall, s_cpu = timed(one_by_one)
    batched, b_wall, b_cpu = timed(lambda: judge.score(items))
    diff = float(np.max(np.abs(np.array(single) - np.array(batched))))
    n = len(items)
    print(
        f"model {model}, {n} events (2 verdicts each), torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}"
    )
    print(f"  one by one: {n / s_wall:8.0f} events/s  ({s_wall:.1f} s wall, {s_cpu:.1f} s CPU)")
    print(f"  batched:    {n / b_wall:8.0f} events/s  ({b_wall:.1f} s wall, {b_cpu:.1f} s CPU)")
    print(f"  ratio batched / one by one: {s_wall / b_wall:.1f}x wall, {s_cpu / b_cpu:.1f}x CPU")
    print(f"  largest score difference: {diff:.2e}")
    return 0 if diff < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
