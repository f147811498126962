"""Shared test setup: an offline, isolated environment and real databases.

At import time the environment is made offline and private to the session
(Hugging Face offline, Prefect home in a temporary folder, no `DRIFTLOOP_*`
variables leaking in from the shell). Fixtures give a real PostgreSQL 15
cluster started for the session and a migrated `Store` on SQLite and on
PostgreSQL:

    @pytest.mark.postgres
    def test_x(pg_url): ...

    def test_y(store):          # runs once per backend
        assert store.count_events() == 0
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# ------------------------------------------------------------------ environment
_PREFECT_HOME = tempfile.mkdtemp(prefix="driftloop-prefect-")
atexit.register(shutil.rmtree, _PREFECT_HOME, True)
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PREFECT_HOME": _PREFECT_HOME,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Synchronous MLflow logging: a test reads back what it logged at once.
        "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    }
)
# Tests choose their own servers: never reach one configured in the shell.
for _k in list(os.environ):
    if _k.startswith("DRIFTLOOP_") or _k in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        del os.environ[_k]

# ------------------------------------------------------------------ PostgreSQL
PG_BINDIR = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> Path | None:
    if (PG_BINDIR / "initdb").exists() and (PG_BINDIR / "pg_ctl").exists():
        return PG_BINDIR
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _admin(port: int, sql: str) -> None:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as c:
        c.execute(sql)


@pytest.fixture(scope="session")
def pg_port() -> int:
    """Port of a throwaway PostgreSQL cluster on 127.0.0.1 (user postgres, trust auth)."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip(f"PostgreSQL server binaries not found ({PG_BINDIR} or initdb/pg_ctl on PATH)")
    # Directly under /tmp: the postgres user cannot enter pytest's private tmp tree.
    root = Path(tempfile.mkdtemp(prefix="driftloop-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run initdb as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, log = root / "data", root / "server.log"
    subprocess.run(
        prefix
        + [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    port = 0
    for _ in range(3):  # another process may take the free port before the server binds it
        port = _free_port()
        # A throwaway cluster: durability is not needed, speed is.
        opts = (
            f"-c fsync=off -c full_page_writes=off -c synchronous_commit=off "
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"
        )
        started = subprocess.run(
            prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start"],
            capture_output=True,
        )
        if started.returncode == 0:
            break
    else:
        text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {started.stderr.decode(errors='replace')}\n{text}")
    try:
        yield port
    finally:
        subprocess.run(
            prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    """Wait until `url` answers 200; fail with the end of `log` if the server process exits or
    `timeout_s` (s) passes first."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            text = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            pytest.fail(f"{url} did not come up:\n{text}")
        time.sleep(0.3)


def new_pg_database(port: int) -> str:
    """Create an empty database in the session cluster and return its SQLAlchemy URL."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    _admin(port, f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"


@pytest.fixture(scope="session")
def pg_url(pg_port: int) -> str:
    """SQLAlchemy URL of one database in the session's PostgreSQL cluster."""
    return new_pg_database(pg_port)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a fresh PostgreSQL database per test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return new_pg_database(request.getfixturevalue("pg_port"))


@pytest.fixture
def store(store_url: str):
    """A migrated `Store` on each backend."""
    from driftloop.store import Store

    s = Store(store_url)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path):
    """A migrated `Store` on a SQLite file (for tests where the backend does not matter)."""
    from driftloop.store import Store

    s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    s.migrate()
    yield s
    s.close()


# ------------------------------------------------------------------ models and Prefect
DEMO_STEPS = 300  # enough for 1.0 on the canary and for LoRA to learn billing (measured); ~30 s on 2 cores


@pytest.fixture(scope="session")
def demo_model(request: pytest.FixtureRequest, tmp_path_factory) -> Path:
    """The demo base model, built once by step count (never cut short by a time cap, however
    busy the machine) and kept in pytest's cache; the builder reuses a matching folder."""
    from retrain.base_model import build_demo_model

    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("driftloop-demo-model") if cache else tmp_path_factory.mktemp("demo-model")
    path = build_demo_model(folder, max_seconds=3600, max_steps=DEMO_STEPS)
    import json

    steps = json.loads((path / "driftloop_build.json").read_text())["steps"]
    assert steps == DEMO_STEPS, f"demo model build stopped at {steps}/{DEMO_STEPS} steps"
    return path


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness: a temporary local API and database, once per session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module: on a shared 2-core machine, two 2-thread torch
    processes spin against each other (steps 10-25x slower); one thread each is steady."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def make_tiny_gpt2(tmp_path_factory):
    """Factory: a random-init 1-layer GPT-2 with the demo's tokenizer, saved to a fresh folder.
    Keyword arguments override GPT2Config fields (e.g. dropout for exact-resume tests)."""

    def make(**overrides) -> Path:
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel

        from driftloop.demo import world
        from retrain.base_model import build_tokenizer

        path = tmp_path_factory.mktemp("tiny-base")
        tok = build_tokenizer(world.tokenizer_corpus(0))
        torch.manual_seed(0)
        cfg = GPT2Config(
            vocab_size=len(tok),
            n_positions=64,
            n_embd=32,
            n_layer=1,
            n_head=2,
            bos_token_id=tok.eos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.eos_token_id,
            **overrides,
        )
        GPT2LMHeadModel(cfg).save_pretrained(path)
        tok.save_pretrained(path)
        return path

    return make


@pytest.fixture(scope="session")
def e2e_config():
    """Factory: write a driftloop.yaml for a whole-loop run on `model_dir` into `folder`
    (feedback under folder/feedback, state under folder/state); `extra` adds YAML lines."""

    def write(folder: Path, model_dir: Path, extra: str = "") -> Path:
        p = folder / "driftloop.yaml"
        p.write_text(f"""
project: e2e
state_dir: state
model: {{base: {model_dir}}}
sources: [{{path: feedback/*.jsonl}}]
monitor: {{segment_fields: [topic, locale, tier]}}
policy: {{floors: {{thumbs_up_rate: 0.7}}, max_drop: {{thumbs_up_rate: 0.1}}, min_n: 30}}
{extra}
""")
        return p

    return write


@pytest.fixture
def data_file(tmp_path) -> Path:
    """24 (prompt, completion) training rows from every topic of the demo world, as JSONL."""
    from driftloop.demo import world
    from retrain.curate import write_jsonl

    pairs = world.training_corpus(24, seed=5, topics=list(world.INTENTS))
    return write_jsonl(
        [{"id": f"x{k}", "prompt": q, "completion": a} for k, (q, a) in enumerate(pairs)], tmp_path / "train.jsonl"
    )


@contextmanager
def evidently_ui(workspace: str | Path) -> Iterator[tuple[str, list[dict]]]:
    """`evidently ui` on `workspace` at a free loopback port: (its API base URL, the projects it lists).

    Waits up to 90 s for the first answer; the server is stopped on exit.
    """
    import httpx

    port = _free_port()
    ui = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("evidently")),
            "ui",
            "--workspace",
            str(workspace),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                projects = httpx.get(f"{api}/projects", timeout=5).json()
                break
            except httpx.TransportError:
                assert ui.poll() is None, "evidently ui exited"
                assert time.monotonic() < deadline, "evidently ui did not answer within 90 s"
                time.sleep(0.5)
        yield api, projects
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


# ------------------------------------------------------------------ markers
# Fixtures that start a server process (Prefect's API, `mlflow server`): a test that uses one,
# directly or through another fixture, is marked `server`, which `make test-fast` leaves out.
SERVER_FIXTURES = {"prefect_harness", "mlflow_server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
