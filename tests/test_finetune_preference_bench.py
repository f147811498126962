"""`benchmarks/finetune_gpu.py --objectives dpo,kto --smoke`: driftloop's DPO and KTO against TRL's
DPOTrainer and KTOTrainer on the same tiny model, rows and steps, on a CPU in seconds."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("trl") is None, reason="trl (the dev extra) is not installed: no TRL side to time"
    ),
]


def test_preference_benchmark_smoke_times_both_sides_for_dpo_and_kto(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "finetune_gpu.py"), "--objectives", "dpo,kto", "--smoke"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    print(json.dumps(data["summary"]))
    assert [(r["side"], r["objective"]) for r in data["results"]] == [
        ("trl", "dpo"),
        ("driftloop", "dpo"),
        ("trl", "kto"),
        ("driftloop", "kto"),
    ]
    for r in data["results"]:
        assert "error" not in r, r
        assert r["steps"] == 3 and r["train_seconds"] > 0 and r["rows_per_s"] > 0 and r["device"] == "cpu"
        assert 0 < r["final_loss"] < 2  # at the reference: DPO ln 2, KTO 0.5 x its class weight
    for objective in ("dpo", "kto"):
        s = data["summary"][objective]
        assert s["speedup"] == round(s["driftloop_rows_per_s"] / s["trl_rows_per_s"], 2)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["summary"] == data["summary"]
