"""The mlflow_traces source on a temporary MLflow store: traces recorded with mlflow.start_span and rated
with mlflow.log_feedback become events; a second run adds nothing; feedback logged later joins on the next
run; a SIGKILL mid-run loses and duplicates nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import text

from driftloop.core.config_traces import MlflowTracesSource
from driftloop.ingest.mlflow_traces import ingest_mlflow_traces
from driftloop.store import Store

N = 18


def record(uri: str, n: int, start: int = 0) -> list[str]:
    """n traces in experiment `bot`; every third rated up or down by a human, every fifth with an expectation."""
    import mlflow
    from mlflow.entities import AssessmentSource

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bot")
    human = AssessmentSource(source_type="HUMAN", source_id="u1")
    ids = []
    for i in range(start, start + n):
        with mlflow.start_span("chat", span_type="CHAT_MODEL") as s:
            if i % 2:
                s.set_inputs(
                    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q{i}"}]}
                )
                s.set_outputs({"choices": [{"message": {"role": "assistant", "content": f"a{i}"}}]})
            else:
                s.set_inputs({"question": f"q{i} from ann@example.com"})
                s.set_outputs(f"a{i}")
            ids.append(s.trace_id)
        if i % 3 == 0:
            mlflow.log_feedback(trace_id=ids[-1], name="thumbs", value=i % 2 == 0, source=human)
        if i % 5 == 0:
            mlflow.log_expectation(trace_id=ids[-1], name="expected", value=f"better a{i}", source=human)
        if i % 7 == 0:  # a judge's verdict is not a user's rating
            judge = AssessmentSource(source_type="LLM_JUDGE", source_id="j")
            mlflow.log_feedback(trace_id=ids[-1], name="judge", value=False, source=judge)
    return ids


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """An MLflow store with N traces, recorded once for the module (creating one takes seconds)."""
    import mlflow

    before = mlflow.get_tracking_uri()
    os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    try:
        ids = record(f"sqlite:///{path}", N)
    finally:
        os.environ.pop("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", None)
        mlflow.set_tracking_uri(before)
    return path, ids


@pytest.fixture
def traced(template, tmp_path, monkeypatch):
    """(tracking URI, trace ids) of a copy of the template store."""
    import mlflow

    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
    path, ids = template
    shutil.copy(path, tmp_path / "mlflow.db")
    before = mlflow.get_tracking_uri()
    yield f"sqlite:///{tmp_path / 'mlflow.db'}", ids
    mlflow.set_tracking_uri(before)


def events(store: Store) -> dict[str, dict]:
    with store.engine.connect() as c:
        return {r["event_id"]: dict(r) for r in c.execute(text("SELECT * FROM feedback")).mappings()}


def test_traces_and_feedback_become_events_once_and_late_feedback_joins(traced, store, tmp_path):
    sqlite_store = store  # either backend
    uri, ids = traced
    src = MlflowTracesSource(experiment="bot", batch_traces=7)
    r = ingest_mlflow_traces(sqlite_store, src, uri)
    assert (r.read, r.accepted, r.duplicates, r.quarantined) == (N, N, 0, 0) and r.balanced
    assert dict(r.redacted) == {"email": N // 2}
    got = events(sqlite_store)
    assert set(got) == set(ids)
    for i, tid in enumerate(ids):
        e = got[tid]
        assert e["prompt"] == (f"q{i}" if i % 2 else f"q{i} from [EMAIL]") and e["response"] == f"a{i}"
        assert e["source"] == "mlflow_traces:bot" and e["latency_ms"] >= 0
        if i % 3 == 0:
            assert (e["rating"], e["thumbs_up"]) == ((1.0, 1) if i % 2 == 0 else (0.0, 0)), i
        else:
            assert e["rating"] is None and e["thumbs_up"] is None, i  # the judge's verdicts are ignored
        assert e["correction"] == (f"better a{i}" if i % 5 == 0 else None)

    again = ingest_mlflow_traces(sqlite_store, src, uri)
    assert (again.read, again.accepted) == (0, 0) and len(events(sqlite_store)) == N

    # Feedback logged after the trace was read: applied by the next run, which still reads no trace.
    import mlflow
    from mlflow.entities import AssessmentSource

    mlflow.set_tracking_uri(uri)
    mlflow.log_feedback(trace_id=ids[1], name="thumbs", value=True, source=AssessmentSource(source_type="HUMAN"))
    late = record(uri, 2, start=N)
    third = ingest_mlflow_traces(sqlite_store, src, uri)
    assert (third.read, third.accepted) == (2, 2)
    got = events(sqlite_store)
    assert (got[ids[1]]["rating"], got[ids[1]]["thumbs_up"]) == (1.0, 1)
    assert set(got) == set(ids) | set(late)


CHILD = """
import sys
from driftloop.core.config_traces import MlflowTracesSource
from driftloop.ingest.mlflow_traces import ingest_mlflow_traces
from driftloop.store import Store
print("ready", flush=True)
ingest_mlflow_traces(Store(sys.argv[1]), MlflowTracesSource(experiment="bot", batch_traces=2), sys.argv[2])
"""


def test_sigkill_mid_run_then_rerun_loses_and_duplicates_nothing(traced, tmp_path):
    uri, ids = traced
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    store.migrate()
    kills, counts = 0, [0]
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, url, uri], stdout=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        assert child.stdout.readline().strip() == b"ready"
        while child.poll() is None and store.count_events() == counts[-1]:
            time.sleep(0.002)
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            kills += 1
        child.wait()
        counts.append(store.count_events())
        if kills and 0 < counts[-1] < N:
            break  # killed mid-run: the rerun below must finish the job
    assert kills >= 1 and counts == sorted(counts) and any(0 < n < N for n in counts), counts
    r = ingest_mlflow_traces(store, MlflowTracesSource(experiment="bot", batch_traces=2), uri)
    assert r.balanced and r.duplicates == 0  # resumed after the last committed batch
    got = events(store)
    assert set(got) == set(ids) and store.count_events() == N
    store.close()
