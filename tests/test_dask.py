"""Parallel benchmark suites: on a local Dask cluster of 2 worker processes (a running one
given by address, or the flow's own temporary one) the suites give the same per-item
results and metrics as the serial run, and they really ran in the cluster's workers. `runner: {kind: dask}` without
prefect-dask is a one-line ConfigError naming the key."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from driftloop.app.cli import main
from driftloop.core.config import load_config
from driftloop.core.errors import ConfigError, StageError
from driftloop.tracking import Tracker
from evaluators.benchmark import TASKS_DIR

pytestmark = pytest.mark.usefixtures("prefect_harness", "one_torch_thread")
needs_dask = pytest.mark.skipif(
    importlib.util.find_spec("prefect_dask") is None, reason="prefect-dask is not installed"
)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """A second project task, `driftloop_canary_b`: the canary's format on another 40 of its items."""
    d = tmp_path_factory.mktemp("tasks")
    rows = (TASKS_DIR / "canary.jsonl").read_text().splitlines()
    (d / "canary_b.jsonl").write_text("\n".join(rows[60:100]) + "\n")
    yaml_text = (TASKS_DIR / "driftloop_canary.yaml").read_text()
    (d / "driftloop_canary_b.yaml").write_text(
        yaml_text.replace("task: driftloop_canary", "task: driftloop_canary_b").replace(
            "canary.jsonl", "canary_b.jsonl"
        )
    )
    return d


def write_config(folder: Path, task_dir: Path, runner: str) -> Path:
    """Two suites on two tasks (8 and 6 items), state in `folder`, the given `runner:` mapping."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "driftloop.yaml"
    p.write_text(f"""project: dask
state_dir: state
benchmark:
  batch_size: 4
  task_dirs: [{task_dir}]
  suites:
    canary: {{role: canary, tasks: [{{name: driftloop_canary, limit: 8}}]}}
    topics: {{role: target, tasks: [{{name: driftloop_canary_b, limit: 6}}]}}
runner: {runner}
""")
    return p


@pytest.fixture(scope="module")
def cluster():
    """A local Dask cluster of 2 single-threaded worker processes, and the PIDs of its workers."""
    distributed = pytest.importorskip("distributed", reason="distributed (Dask) is not installed")
    # set_as_default=False: prefect-dask joins a current client's cluster, which would hide the
    # flow's own LocalCluster from the test that needs one.
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as lc,
        distributed.Client(lc, set_as_default=False) as client,
    ):
        yield lc.scheduler_address, set(client.run(os.getpid).values())


@pytest.fixture(scope="module")
def serial(demo_model: Path, task_dir: Path, tmp_path_factory):
    from flows.benchmark import BenchmarkParams, benchmark

    cfg = write_config(tmp_path_factory.mktemp("serial"), task_dir, "{kind: serial}")
    return benchmark(BenchmarkParams(config=str(cfg), model=str(demo_model)))


def same_results(got, want) -> None:
    assert set(got.samples) == set(want.samples) == {"canary", "topics"}
    for suite in want.samples:
        [g], [w] = got.samples[suite], want.samples[suite]
        assert (g.task, g.metric, g.model) == (w.task, w.metric, w.model)
        assert g.items == w.items and g.detail == w.detail  # per item: outcome, choice and every log-likelihood
        assert [m.model_dump() for m in got.metrics[suite]] == [m.model_dump() for m in want.metrics[suite]]
    assert len(got.samples["canary"][0].items) == 8 and len(got.samples["topics"][0].items) == 6


@needs_dask
@pytest.mark.slow
def test_two_suites_on_a_local_dask_cluster_match_the_serial_run_and_ran_in_its_workers(
    demo_model: Path, task_dir: Path, tmp_path: Path, serial, cluster
) -> None:
    from flows.benchmark import BenchmarkParams, benchmark

    address, worker_pids = cluster
    cfg = write_config(tmp_path / "dask", task_dir, f"{{kind: dask, address: '{address}'}}")
    got = benchmark(BenchmarkParams(config=str(cfg), model=str(demo_model)))
    same_results(got, serial)
    pids = {p.pid for p in got.executed_on.values()}
    assert set(got.executed_on) == {"canary", "topics"}
    assert pids <= worker_pids and os.getpid() not in pids
    assert all(p.worker.endswith(")") and "tcp://127.0.0.1:" in p.worker for p in got.executed_on.values())
    assert {p.pid for p in serial.executed_on.values()} == {os.getpid()} and not serial.executed_on["canary"].worker
    tr = Tracker.from_config(load_config(str(cfg)))
    assert tr.client.get_run(got.run_id).data.tags["driftloop.runner"] == "dask"

    # The workers stored what they computed: a serial rerun on the same state is answered from the cache.
    serial_cfg = cfg.read_text().replace(f"{{kind: dask, address: '{address}'}}", "{kind: serial}")
    cfg.write_text(serial_cfg)
    again = benchmark(BenchmarkParams(config=str(cfg), model=str(demo_model)))
    assert all(m.note == "cached" for ms in again.metrics.values() for m in ms)
    assert again.samples["topics"][0].items == serial.samples["topics"][0].items


@needs_dask
@pytest.mark.slow
def test_without_an_address_the_flow_starts_and_closes_its_own_local_cluster(
    demo_model: Path, task_dir: Path, tmp_path: Path, serial
) -> None:
    import psutil

    from flows.benchmark import BenchmarkParams, benchmark

    cfg = write_config(tmp_path / "own", task_dir, "{kind: dask, n_workers: 2}")
    got = benchmark(BenchmarkParams(config=str(cfg), model=str(demo_model)))
    same_results(got, serial)
    placed = list(got.executed_on.values())
    assert all(p.pid != os.getpid() and "tcp://127.0.0.1:" in p.worker for p in placed)
    # The temporary cluster is closed with the flow: its worker processes exit (the nanny kills
    # a straggler after 4 s), whereas a leaked cluster would keep them alive.
    procs = []
    for p in placed:
        try:
            procs.append(psutil.Process(p.pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=30)
    assert [a for a in alive if a.status() != psutil.STATUS_ZOMBIE] == []


def test_dask_without_prefect_dask_is_a_config_error_naming_the_key(
    tmp_path: Path, task_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "prefect_dask" else real(name, *a)
    )
    cfg = write_config(tmp_path, task_dir, "{kind: dask}")
    with pytest.raises(ConfigError, match=r"runner: kind: dask needs the prefect-dask package"):
        load_config(str(cfg))
    assert main(["--config", str(cfg), "benchmark", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "runner: kind: dask needs the prefect-dask package" in err[0]
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    "runner, message",
    [
        ("{kind: serial, address: 'tcp://127.0.0.1:8786'}", "runner: address applies to kind: dask only"),
        ("{kind: dask, n_workers: 0}", "runner.n_workers: Input should be greater than or equal to 1"),
        ("{kind: threads}", "runner.kind: Input should be 'serial' or 'dask'"),
    ],
)
def test_bad_runner_section_names_the_key(tmp_path: Path, task_dir: Path, runner: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(str(write_config(tmp_path, task_dir, runner)))


def test_runner_kind_from_the_environment(tmp_path: Path, task_dir: Path) -> None:
    cfg = load_config(str(write_config(tmp_path, task_dir, "{kind: serial}")), env={"DRIFTLOOP_RUNNER__KIND": "dask"})
    assert cfg.runner.kind == "dask" and cfg.runner.n_workers == 2 and cfg.runner.address is None


def test_a_worker_whose_config_names_another_store_refuses_to_run(tmp_path: Path, task_dir: Path) -> None:
    from driftloop.core.config import TaskSpec
    from flows.benchmark import evaluate_suite

    cfg = write_config(tmp_path, task_dir, "{kind: dask}")
    flow_store = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    with pytest.raises(
        StageError,
        match=r"suite canary: this worker's config gives store sqlite:///.*/state/store\.db, "
        r"the flow uses sqlite:///.*/elsewhere\.db",
    ):
        evaluate_suite(
            str(cfg),
            "canary",
            [TaskSpec(name="driftloop_canary", limit=2)],
            str(tmp_path),
            "0" * 64,
            "m",
            [str(TASKS_DIR)],
            flow_store,
            {"batch_size": 4, "device": "cpu"},
        )
