"""The MLflow UI shows the loop's lineage: a retrain registered through the loop's code path,
`mlflow server` started on the test's store, and the training run's page and the registered
version's page opened in headless Chromium. The assertions read both the rendered DOM and the
REST API the UI itself reads, so neither can pass on an empty page."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from driftloop.core.config import load_config
from driftloop.core.types import FeedbackEvent
from driftloop.store import Store

CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=15000",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,  # a retrain, an `mlflow server` start and four Chromium page loads: 40+ s
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it where apt-get works)"
    ),
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def retrained(tmp_path_factory, make_tiny_gpt2, e2e_config):
    """A tiny base registered as champion, then retrained on 4 corrections (2 steps) and registered."""
    from flows.common import StageParams, plain_calls
    from flows.registry import ensure_champion
    from flows.retrain import retrain

    root = tmp_path_factory.mktemp("mlflow_ui")
    (root / "feedback").mkdir()
    (root / "feedback" / "none.jsonl").write_text("")
    params = StageParams(config=str(e2e_config(root, make_tiny_gpt2(), "retrain: {max_steps: 2}")))
    cfg = load_config(params.config)
    store = Store(cfg.store_url)
    store.migrate()
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    store.add_events(
        [
            FeedbackEvent(
                event_id=f"e{k}",
                ts=t0 + timedelta(minutes=k),
                prompt=f"where is my order number {k}",
                response="no idea",
                thumbs_up=False,
                correction="track it online.",
            )
            for k in range(4)
        ],
        source="api",
    )
    store.add_items(
        [
            {
                "item_id": f"t{k}",
                "prompt_key": f"where is order {k}",
                "split": "train",
                "prompt": f"where is my order number {k}",
                "answer": "track it online.",
                "source_event_id": f"e{k}",
            }
            for k in range(4)
        ]
    )
    with plain_calls():
        ensure_champion(params)
        res = retrain(params)
    return cfg, res


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(retrained, tmp_path):
    """`mlflow server` on a free loopback port against the test's store: its base URL."""
    import httpx

    cfg, _ = retrained
    port = _free_port()
    log = tmp_path / "server.log"
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": str(bindir) + os.pathsep + os.environ["PATH"]}
    cmd = [str(bindir / "mlflow"), "server", "--backend-store-uri", cfg.tracking_uri]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _open(url: str, tmp_path: Path, shot: Path) -> str:
    """The page's DOM after its scripts ran, and a screenshot of it at `shot`."""
    flags = [*FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    subprocess.run(
        [CHROMIUM, *flags, "--window-size=1400,1000", f"--screenshot={shot}", url], capture_output=True, timeout=180
    )
    assert shot.stat().st_size > 10_000, f"screenshot {shot} is (nearly) empty"
    print(f"screenshot: {shot}")
    return dom.stdout


def test_the_ui_shows_the_training_runs_datasets_and_the_versions_logged_model(retrained, server, tmp_path):
    import httpx

    cfg, res = retrained
    api = f"{server}/api/2.0/mlflow"
    run = httpx.get(f"{api}/runs/get", params={"run_id": res.run_id}, timeout=30).json()["run"]
    datasets = {d["dataset"]["name"]: d for d in run["inputs"]["dataset_inputs"]}
    assert "training-set" in datasets
    digest = datasets["training-set"]["dataset"]["digest"]
    reg = retrained[0].tracking.registered_model
    mv = httpx.get(f"{api}/model-versions/get", params={"name": reg, "version": res.version}, timeout=30).json()
    # The SQL registry keeps the LoggedModel as the version's source (`models:/<model_id>`).
    source = mv["model_version"]["source"]
    model_id = mv["model_version"].get("model_id") or source.removeprefix("models:/")
    assert source == f"models:/{model_id}" and mv["model_version"]["run_id"] == res.run_id
    lm = httpx.get(f"{server}/api/2.0/mlflow/logged-models/{model_id}", timeout=30).json()["model"]
    assert lm["info"]["source_run_id"] == res.run_id and lm["info"]["status"] == "LOGGED_MODEL_READY"

    exp = run["info"]["experiment_id"]
    run_dom = _open(f"{server}/#/experiments/{exp}/runs/{res.run_id}", tmp_path, tmp_path / "training_run.png")
    assert "training-set" in run_dom, run_dom[-2000:]
    assert digest in run_dom  # the dataset's digest as MLflow shows it beside the name

    mv_dom = _open(f"{server}/#/models/{reg}/versions/{res.version}", tmp_path, tmp_path / "model_version.png")
    assert f"Version {res.version}" in mv_dom, mv_dom[-2000:]
    assert model_id in mv_dom  # the version's page links to its LoggedModel (href carries the model id)
