"""Dispatch of the fine-tuning job: the training core's imports stay within what a bare GPU
worker has, the `gpu` deployment runs the retrain flow, and the GPU benchmark runs end to
end in its CPU smoke mode. The `gpu` pool's Kubernetes template: tests/test_k8s_template.py."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT.parent / "shared" / "bench" / "gpu_lora_baseline.py"
CORE = ["spec", "trainer", "job", "packing", "loss", "checkpoint", "distributed", "curate", "attention", "precision"]
ALLOWED = {"torch", "transformers", "peft", "tokenizers", "accelerate", "safetensors", "retrain"}


@pytest.mark.parametrize("module", CORE)
def test_training_core_imports_only_stdlib_torch_and_hugging_face(module):
    tree = ast.parse((ROOT / "retrain" / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
            names.add(node.module.split(".")[0])
    outside = sorted(n for n in names if n not in ALLOWED and n not in sys.stdlib_module_names)
    assert outside == []


def test_gpu_deployment_runs_the_retrain_flow_on_the_gpu_pool():
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    gpu = next(d for d in doc["deployments"] if d["name"] == "gpu")
    assert gpu["entrypoint"] == "flows.events:retrain_cycle" and gpu["work_pool"]["name"] == "gpu"


@pytest.mark.skipif(not BASELINE.is_file(), reason=f"no baseline script at {BASELINE}")
def test_gpu_benchmark_smoke_mode_times_both_sides_for_lora_and_full(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "finetune_gpu.py"),
            "--smoke",
            "--baseline",
            str(BASELINE),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    sides = [(r["side"], r["mode"]) for r in data["results"]]
    assert sides == [
        ("baseline", "lora"),
        ("baseline", "full"),
        ("driftloop", "lora"),
        ("driftloop", "full"),
        ("driftloop", "lora+pure"),
        ("driftloop", "full+pure"),
    ]
    assert [r.get("precision") for r in data["results"]] == [None, None, "fp32", "fp32", "bf16-pure", "bf16-pure"]
    for r in data["results"]:
        assert r["tokens_per_s"] > 0 and r["batch"] == 2 and r["seq"] == 64 and 5 < r["loss"] < 8  # ~ln(1000)
    for mode in ("lora", "full"):
        s = data["summary"][mode]
        assert s["speedup"] == round(s["driftloop_tokens_per_s"] / s["baseline_tokens_per_s"], 2)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["summary"] == data["summary"]
