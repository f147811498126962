"""Dispatch of the fine-tuning job: the training core's imports stay within what a bare GPU
worker has, the `gpu` deployment runs the retrain flow, the Kubernetes base job template
for the `gpu` pool is valid for Prefect's Kubernetes worker and requests GPUs, and the GPU
benchmark runs end to end in its CPU smoke mode."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "k8s" / "gpu-work-pool.json"
BASELINE = ROOT.parent / "shared" / "bench" / "gpu_lora_baseline.py"
CORE = ["spec", "trainer", "job", "packing", "loss", "checkpoint", "distributed", "curate"]
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
    assert gpu["entrypoint"] == "flows/retrain.py:retrain" and gpu["work_pool"]["name"] == "gpu"


def _template() -> dict:
    return json.loads(TEMPLATE.read_text())


def test_k8s_template_placeholders_all_name_declared_variables():
    # The documented shape of a Prefect work pool base job template: job_configuration whose
    # "{{ name }}" placeholders each name a property of the JSON-schema `variables`.
    tpl = _template()
    assert set(tpl) == {"job_configuration", "variables"}
    used = set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", json.dumps(tpl["job_configuration"])))
    declared = set(tpl["variables"]["properties"])
    assert {"gpu_count", "node_selector", "tolerations", "image"} <= used and used <= declared
    jsonschema.Draft202012Validator.check_schema({k: v for k, v in tpl["variables"].items() if k != "definitions"})


def test_k8s_template_is_a_valid_kubernetes_worker_template_that_requests_gpus():
    pytest.importorskip("prefect_kubernetes", reason="prefect-kubernetes is not installed")
    from prefect.server.schemas.actions import validate_base_job_template
    from prefect.utilities.templating import apply_values
    from prefect_kubernetes.worker import KubernetesWorker

    tpl = _template()
    validate_base_job_template(tpl)  # what the Prefect server runs on `prefect work-pool create`
    default = KubernetesWorker.get_default_base_job_template()
    assert set(default["variables"]["properties"]) <= set(tpl["variables"]["properties"])
    job = KubernetesWorker.job_configuration

    def resolve(values: dict):
        variables = {**job._get_base_config_defaults(tpl["variables"]["properties"]), **values}
        cfg = job(**apply_values(tpl["job_configuration"], variables))
        return cfg.job_manifest["spec"]["template"]["spec"]

    pod = resolve({})
    res = pod["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    pod = resolve({"gpu_count": 4, "node_selector": {"gpu-type": "h100"}})
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert pod["nodeSelector"] == {"gpu-type": "h100"}
    # A deployment's job_variables are checked against the same schema: 0 GPUs is refused.
    with pytest.raises(jsonschema.ValidationError, match="minimum of 1"):
        jsonschema.validate({"gpu_count": 0}, tpl["variables"])


@pytest.mark.skipif(not BASELINE.is_file(), reason=f"no baseline script at {BASELINE}")
def test_gpu_benchmark_smoke_mode_times_both_sides_for_lora_and_full(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "finetune_gpu.py"), "--smoke",
                           "--baseline", str(BASELINE), "--out", str(out)],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    sides = {(r["side"], r["mode"]) for r in data["results"]}
    assert sides == {("baseline", "lora"), ("driftloop", "lora"), ("baseline", "full"), ("driftloop", "full")}
    for r in data["results"]:
        assert r["tokens_per_s"] > 0 and r["batch"] == 2 and r["seq"] == 64 and 5 < r["loss"] < 8  # ~ln(1000)
    for mode in ("lora", "full"):
        s = data["summary"][mode]
        assert s["speedup"] == round(s["driftloop_tokens_per_s"] / s["baseline_tokens_per_s"], 2)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["summary"] == data["summary"]
