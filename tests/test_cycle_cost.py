"""A cycle's cost on its MLflow run: wall and CPU seconds per stage, tokens trained, GPU figures on CUDA."""

from __future__ import annotations

import time

import pytest

from driftloop.services.cost import CostMeter, cost_metrics


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_meter_counts_wall_and_cpu_seconds_per_stage():
    meter = CostMeter()
    with meter.stage("monitor"):
        _spin(0.2)
    with meter.stage("benchmark champion"):
        time.sleep(0.2)
    assert meter.cpu["monitor"] >= 0.2 and meter.wall["monitor"] >= 0.2
    assert meter.wall["benchmark champion"] >= 0.2 and meter.cpu["benchmark champion"] < 0.1  # sleeping costs no CPU
    m = cost_metrics(meter)
    assert m["cost/benchmark_champion/wall_s"] == meter.wall["benchmark champion"]
    assert m["cost/total/cpu_s"] == pytest.approx(meter.cpu["monitor"] + meter.cpu["benchmark champion"], abs=1e-3)
    assert not any(k.startswith("cost/retrain/") for k in m)


def test_retrain_figures_come_from_the_fine_tune_metrics():
    cpu = cost_metrics(CostMeter(), {"tokens": 5120.0, "wall_seconds": 40.0, "peak_rss_bytes": 1.0})
    assert cpu["cost/retrain/tokens"] == 5120 and "cost/retrain/gpu_s" not in cpu  # no GPU on a CPU run
    gpu = cost_metrics(CostMeter(), {"tokens": 5120.0, "wall_seconds": 40.0, "peak_cuda_bytes": 2.0**30})
    assert gpu["cost/retrain/gpu_s"] == 40.0 and gpu["cost/retrain/peak_gpu_bytes"] == 2.0**30


def test_log_cost_puts_them_on_the_cycle_run(tmp_path):
    from driftloop.core.config import load_config
    from driftloop.services.cycle import CycleSummary
    from driftloop.tracking import Tracker
    from flows.loop import _Clock, log_cost

    (tmp_path / "driftloop.yaml").write_text("project: cost\nstate_dir: st\n")
    tr = Tracker.from_config(load_config(tmp_path / "driftloop.yaml", env={}, check_files=False))
    cycle, retrain = tr.start_run("cycle"), tr.start_run("retrain")
    tr.log_metrics(retrain, {"tokens": 640, "wall_seconds": 3.5})
    clock = _Clock(CycleSummary(cycle="c"))
    assert clock("monitor", lambda x: x + 1, 1) == 2
    clock.retrain_run = retrain
    log_cost(tr, cycle, clock)
    metrics = tr.run_record(cycle)["metrics"]
    assert (
        metrics["cost/retrain/tokens"] == 640 and "cost/monitor/wall_s" in metrics and "cost/monitor/cpu_s" in metrics
    )
