"""What a cycle cost, per stage: wall and CPU seconds, and for the fine-tune the tokens trained,
GPU seconds and peak GPU memory. Logged as `cost/...` metrics on the cycle run.

    >>> meter = CostMeter()
    >>> with meter.stage("monitor"):
    ...     run_monitor()
    >>> cost_metrics(meter, retrain_metrics={"tokens": 5120, "wall_seconds": 42.0, "peak_cuda_bytes": 2**30})
    {'cost/monitor/wall_s': 3.1, 'cost/monitor/cpu_s': 2.7, ..., 'cost/retrain/gpu_s': 42.0}
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process's threads and of its child processes that
    have exited (a Dask LocalCluster's workers, `torchrun`); remote workers are not counted."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


@dataclass
class CostMeter:
    wall: dict[str, float] = field(default_factory=dict)  # seconds per stage
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per stage

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0, c0 = time.monotonic(), _cpu_seconds()
        try:
            yield
        finally:
            self.wall[name] = round(time.monotonic() - t0, 3)
            self.cpu[name] = round(_cpu_seconds() - c0, 3)


def _key(stage: str) -> str:
    return stage.replace(" ", "_")


def cost_metrics(meter: CostMeter, retrain_metrics: dict[str, float] | None = None) -> dict[str, float]:
    """`cost/<stage>/wall_s` and `cost/<stage>/cpu_s` per stage, their totals, and from the
    fine-tune's own metrics `cost/retrain/tokens`, and on CUDA `cost/retrain/gpu_s` (its
    training wall time, the GPU held throughout) and `cost/retrain/peak_gpu_bytes`."""
    out: dict[str, float] = {}
    for stage, s in meter.wall.items():
        out[f"cost/{_key(stage)}/wall_s"] = s
        out[f"cost/{_key(stage)}/cpu_s"] = meter.cpu.get(stage, 0.0)
    out["cost/total/wall_s"] = round(sum(meter.wall.values()), 3)
    out["cost/total/cpu_s"] = round(sum(meter.cpu.values()), 3)
    m = retrain_metrics or {}
    if "tokens" in m:
        out["cost/retrain/tokens"] = float(m["tokens"])
    if "peak_cuda_bytes" in m:
        out["cost/retrain/gpu_s"] = float(m.get("wall_seconds", m.get("train_seconds", 0.0)))
        out["cost/retrain/peak_gpu_bytes"] = float(m["peak_cuda_bytes"])
    return out
