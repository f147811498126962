"""Registered versions are MLflow Models: `models:/<name>@champion` loads and serves text."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from driftloop.core import tags as T
from driftloop.core.config import load_config
from driftloop.tracking import Tracker


@pytest.fixture(scope="module")
def demo_model(make_tiny_gpt2):
    """A tiny GPT-2 with the demo's tokenizer (the demo's own model takes minutes to build)."""
    return make_tiny_gpt2()


def greedy(model_dir: Path, prompt: str, n: int) -> str:
    """What the model says after the training template, by transformers directly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, lm = AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir)
    ids = tok(f"Q: {prompt}\nA:", return_tensors="pt").input_ids
    with torch.no_grad():
        gen = lm.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id
        )
    return tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True).strip()


@pytest.fixture(scope="module")
def champion(tmp_path_factory, demo_model):
    """The tiny model registered as the champion of a fresh state folder: (config, tracker, version)."""
    root = tmp_path_factory.mktemp("served")
    (root / "driftloop.yaml").write_text("project: served\nstate_dir: st\n")
    cfg = load_config(root / "driftloop.yaml", env={}, check_files=False)
    tr = Tracker.from_config(cfg)
    run = tr.start_run("register-base-model")
    version = tr.register_model(run, demo_model, description="demo", tags={T.ORIGIN: "base"})
    tr.end_run(run)
    tr.move_champion(version, by="test", reason="base", how="initial")
    return cfg, tr, version


def test_champion_is_a_logged_model_of_its_run_and_loads_with_pyfunc(champion, demo_model):
    import mlflow
    import pandas as pd

    cfg, tr, version = champion
    mv = tr.client.get_model_version(tr.model_name, version)
    model_id = mv.source.removeprefix("models:/")
    assert model_id.startswith("m-")
    logged = tr.client.get_logged_model(model_id)
    assert logged.source_run_id == mv.run_id  # the LoggedModel is linked to the run that made it
    assert str(logged.status) == "READY"
    assert [o.model_id for o in tr.client.get_run(mv.run_id).outputs.model_outputs] == [model_id]
    # Stored once: the run's own artifacts hold no copy of the weights.
    assert not [a.path for a in tr.client.list_artifacts(mv.run_id)]

    mlflow.set_tracking_uri(cfg.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{tr.model_name}@champion")
    sig = model.metadata.signature
    assert sig.inputs.input_names() == ["prompt"] and "max_new_tokens" in [p.name for p in sig.params.params]
    prompts = ["How do I reset my password?", "Where is my invoice?"]
    out = model.predict(pd.DataFrame({"prompt": prompts}), params={"max_new_tokens": 12})
    assert out == [greedy(demo_model, p, 12) for p in prompts]
    assert all(s for s in out)  # text came out, not an empty answer

    # driftloop's own stages get the Hugging Face folder back, unchanged.
    label, path = tr.resolve("champion")
    assert label == version and (path / "config.json").is_file()
    assert (path / "config.json").read_bytes() == (demo_model / "config.json").read_bytes()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # `mlflow models serve` starts a uvicorn process and loads the model: 30+ s
def test_mlflow_models_serve_answers_invocations(champion, demo_model, tmp_path):
    import httpx

    cfg, tr, _ = champion
    port = _free_port()
    log = tmp_path / "serve.log"
    bindir = str(Path(sys.executable).parent)  # `mlflow models serve` runs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": cfg.tracking_uri, "PATH": bindir + os.pathsep + os.environ["PATH"]}
    mlflow_bin = str(Path(bindir) / "mlflow")
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                mlflow_bin,
                "models",
                "serve",
                "-m",
                f"models:/{tr.model_name}@champion",
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        body = {"dataframe_records": [{"prompt": "How do I reset my password?"}], "params": {"max_new_tokens": 8}}
        r = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert r.status_code == 200, r.text
        preds = json.loads(r.text)["predictions"]
        assert preds == [greedy(demo_model, "How do I reset my password?", 8)] and preds[0]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_an_evaluation_run_lists_the_version_as_its_model_input(champion):
    _, tr, version = champion
    run = tr.start_run("benchmark-champion")
    model_id = tr.log_model_input(run, version)
    tr.end_run(run)
    assert model_id and [m.model_id for m in tr.client.get_run(run).inputs.model_inputs] == [model_id]
