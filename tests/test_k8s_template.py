"""The Kubernetes base job template of the `gpu` work pool (deploy/k8s/gpu-work-pool.json).

No cluster runs here, so the template is checked against everything short of one:
Prefect's own template rules (what the server runs on `prefect work-pool create`),
prefect-kubernetes' KubernetesWorker job configuration (the worker resolves the
template exactly this way for each flow run), and the Kubernetes API models that
prefect-kubernetes ships (kubernetes_asyncio): the manifest a flow run gets has no
field the batch/v1 Job API would drop, requests `nvidia.com/gpu`, selects GPU nodes
and tolerates their taint. The README's `prefect work-pool create` command itself runs
against a temporary Prefect server. Tests that need prefect-kubernetes skip without it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "k8s" / "gpu-work-pool.json"
needs_k8s = pytest.mark.skipif(
    importlib.util.find_spec("prefect_kubernetes") is None,
    reason="prefect-kubernetes is not installed (pip install prefect-kubernetes==0.8.0)",
)


def template() -> dict:
    return json.loads(TEMPLATE.read_text())


def unknown_fields(data, type_name: str, path: str) -> list[str]:
    """Keys of `data` that the Kubernetes API model `type_name` (e.g. "V1Job") does not have, as paths.

    Walks kubernetes_asyncio's generated models (their `attribute_map` and `openapi_types`),
    which mirror the API server's schema: a key that is not there is dropped by the server.
    """
    import kubernetes_asyncio.client.models as models

    if m := re.fullmatch(r"list\[(.+)\]", type_name):
        return [x for i, item in enumerate(data) for x in unknown_fields(item, m.group(1), f"{path}[{i}]")]
    if m := re.fullmatch(r"dict\(str, (.+)\)", type_name):
        return [x for k, v in data.items() for x in unknown_fields(v, m.group(1), f"{path}.{k}")]
    cls = getattr(models, type_name, None)
    if cls is None:  # a primitive (str, int, object)
        return []
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    out = []
    for key, value in data.items():
        if key not in by_json:
            out.append(f"{path}.{key}")
        elif value is not None:
            out.extend(unknown_fields(value, cls.openapi_types[by_json[key]], f"{path}.{key}"))
    return out


def flow_run_manifest(tpl: dict, values: dict | None = None) -> dict:
    """The Job manifest the Kubernetes worker would submit for a flow run, with these job variables."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.utilities.templating import apply_values
    from prefect_kubernetes.worker import KubernetesWorker

    job = KubernetesWorker.job_configuration
    variables = {**job._get_base_config_defaults(tpl["variables"]["properties"]), **(values or {})}
    cfg = job(**apply_values(tpl["job_configuration"], variables))
    cfg.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="brave-otter"))
    return cfg.job_manifest


def as_v1_job(manifest: dict):
    """The manifest deserialised into kubernetes_asyncio's V1Job (types checked, required fields present)."""
    from kubernetes_asyncio.client import ApiClient

    async def go():
        async with ApiClient() as api:
            return api._ApiClient__deserialize(manifest, "V1Job")

    return asyncio.run(go())


def test_placeholders_all_name_declared_variables_and_the_defaults_fit_the_schema():
    # The documented shape of a Prefect work pool base job template: job_configuration whose
    # "{{ name }}" placeholders each name a property of the JSON-schema `variables`.
    tpl = template()
    assert set(tpl) == {"job_configuration", "variables"}
    used = set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", json.dumps(tpl["job_configuration"])))
    props = tpl["variables"]["properties"]
    assert {"gpu_count", "node_selector", "tolerations", "image"} <= used and used <= set(props)
    jsonschema.Draft202012Validator.check_schema({k: v for k, v in tpl["variables"].items() if k != "definitions"})
    defaults = {k: p["default"] for k, p in props.items() if "default" in p}
    jsonschema.validate(defaults, tpl["variables"])
    # A deployment's job_variables are checked against the same schema: 0 GPUs is refused.
    with pytest.raises(jsonschema.ValidationError, match="minimum of 1"):
        jsonschema.validate({"gpu_count": 0}, tpl["variables"])


@needs_k8s
def test_prefect_accepts_it_as_a_kubernetes_worker_template():
    from prefect.server.schemas.actions import validate_base_job_template
    from prefect_kubernetes.worker import KubernetesWorker

    tpl = template()
    validate_base_job_template(tpl)  # what the Prefect server runs on `prefect work-pool create`
    default = KubernetesWorker.get_default_base_job_template()
    # Every variable and top-level setting of the worker's own template is kept.
    assert set(default["variables"]["properties"]) <= set(tpl["variables"]["properties"])
    assert set(default["job_configuration"]) == set(tpl["job_configuration"])


@needs_k8s
def test_a_flow_run_gets_a_kubernetes_job_that_requests_gpus_on_gpu_nodes():
    manifest = flow_run_manifest(template(), {"image": "registry.example/driftloop:gpu"})
    assert unknown_fields(manifest, "V1Job", "job") == []
    job = as_v1_job(manifest)
    pod = job.spec.template.spec
    [c] = pod.containers
    assert job.kind == "Job" and job.spec.completions == job.spec.parallelism == 1 and job.spec.backoff_limit == 0
    assert c.resources.limits["nvidia.com/gpu"] == c.resources.requests["nvidia.com/gpu"] == "1"
    assert c.resources.requests["cpu"] == "8" and c.resources.requests["memory"] == "32Gi"
    assert pod.node_selector == {"nvidia.com/gpu.present": "true"}
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]
    assert pod.restart_policy == "Never" and c.image == "registry.example/driftloop:gpu"
    assert c.args == ["prefect", "flow-run", "execute"]
    env = {e.name: e.value for e in c.env}
    assert env["HF_HUB_OFFLINE"] == "1" and uuid.UUID(env["PREFECT__FLOW_RUN_ID"])
    [mount], [vol] = c.volume_mounts, pod.volumes
    assert (mount.mount_path, mount.name, vol.name, vol.empty_dir.medium) == ("/dev/shm", "dshm", "dshm", "Memory")


@needs_k8s
def test_job_variables_change_gpus_nodes_and_tolerations():
    manifest = flow_run_manifest(
        template(),
        {
            "gpu_count": 4,
            "node_selector": {"gpu-type": "h100"},
            "cpu_limit": "16",
            "memory_limit": "64Gi",
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        },
    )
    assert unknown_fields(manifest, "V1Job", "job") == []
    pod = as_v1_job(manifest).spec.template.spec
    limits = pod.containers[0].resources.limits
    assert limits == {"nvidia.com/gpu": "4", "cpu": "16", "memory": "64Gi"}
    assert pod.node_selector == {"gpu-type": "h100"}
    assert [(t.key, t.value) for t in pod.tolerations] == [("dedicated", "ml")]


@needs_k8s
def test_the_field_check_catches_fields_kubernetes_would_drop():
    # prefect-kubernetes' own default template puts the Job's completions/parallelism in the
    # pod spec; the API server drops them there. Ours has them on the Job spec.
    from prefect_kubernetes.worker import KubernetesWorker

    manifest = flow_run_manifest(KubernetesWorker.get_default_base_job_template())
    assert sorted(unknown_fields(manifest, "V1Job", "job")) == [
        "job.spec.template.spec.completions",
        "job.spec.template.spec.parallelism",
    ]


@needs_k8s
@pytest.mark.usefixtures("prefect_harness")
def test_readme_command_creates_the_gpu_pool_on_a_prefect_server(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    name = f"gpu-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "work-pool",
            "create",
            name,
            "--type",
            "kubernetes",
            "--base-job-template",
            str(TEMPLATE),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    async def read():
        async with get_client() as client:
            return await client.read_work_pool(name)

    pool = asyncio.run(read())
    assert pool.type == "kubernetes" and pool.base_job_template == template()
