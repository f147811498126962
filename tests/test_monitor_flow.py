"""The monitor flow end to end on a real SQLite store, MLflow on SQLite and Prefect's harness:
windows, drift, quality, bias, the reference profile cache, the Evidently workspace (opened
by a real `evidently ui` on loopback) and the `driftloop monitor` table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
from conftest import evidently_ui  # tests/ is on sys.path

from driftloop.app.cli import main
from driftloop.core.config import load_config
from driftloop.core.types import FeedbackEvent
from driftloop.store import Store
from driftloop.tracking import Tracker

# Starts Prefect's harness, MLflow and `evidently ui`: about 90 s on 2 cores.
pytestmark = pytest.mark.slow

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def events(n: int, day0: float, days: float, seed: int, *, slow: bool = False, billing_bad: bool = False):
    """n events spread over [day0, day0 + days) days after T0; knobs shift latency and billing's thumbs."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        topic = ["billing", "account", "shipping"][i % 3]
        up = rng.random() < (0.3 if billing_bad and topic == "billing" else 0.85)
        prompt = ["Where is my parcel?", "Rechnung falsch 😀", "reset password please"][i % 3] + f" #{i}"
        if i == 7:
            prompt = "x" * 1_000_000  # a 1 MB prompt: lengths come from SQL, descriptors read its head
        out.append(
            FeedbackEvent(
                event_id=f"s{seed}-{i}",
                ts=T0 + timedelta(days=day0 + days * i / n),
                model_version="1",
                prompt=prompt,
                response="ok " * int(rng.integers(5, 50)),
                thumbs_up=bool(up),
                rating=1.0 if up else 0.0,
                segment={"topic": topic},
                latency_ms=float(rng.normal(900 if slow else 300, 40)),
                tokens_in=int(rng.integers(5, 60)),
                tokens_out=int(rng.integers(10, 90)),
            )
        )
    return out


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, prefect_harness):
    """A store with a 6-day reference and a 1-day current window (latency shifted, billing worse),
    monitored twice: the second run finds the reference profile in the cache."""
    from flows.common import StageParams
    from flows.monitor import monitor

    tmp = tmp_path_factory.mktemp("monitor")
    cfg_path = tmp / "driftloop.yaml"
    # exact_rows 0: take the large-window path (profiles, cache, sampled page) on a small store.
    cfg_path.write_text("""
project: mon
state_dir: state
monitor:
  segment_fields: [topic]
  exact_rows: 0
  report_rows: 1500
  windows: {current_days: 1, reference_days: 6}
policy: {min_n: 30}
""")
    cfg = load_config(cfg_path)
    cfg.state_path.mkdir(parents=True)
    store = Store(cfg.store_url)
    store.migrate()
    store.add_events(events(1800, 0, 6, 1), source="ref")
    store.add_events(events(600, 6, 1, 2, slow=True, billing_bad=True), source="cur")
    store.close()
    first = monitor(StageParams(config=str(cfg_path)))
    second = monitor(StageParams(config=str(cfg_path)))
    return cfg_path, first, second


def _by_label(ms):
    return {m.label(): m for m in ms}


def test_monitor_flags_the_shifted_column_the_worse_segment_and_logs_to_mlflow(monitored):
    cfg_path, first, _ = monitored
    assert (first.n_reference, first.n_current) == (1800, 600)
    drift = _by_label(first.drift)
    assert drift["drift_score[column=latency_ms]"].passed is False
    assert drift["drift_score[column=prompt_len]"].passed is True
    assert "computed on all rows" in drift["drift_score[column=latency_ms]"].note
    (gap,) = first.bias
    assert gap.segment == {"field": "topic", "worst": "billing", "best": gap.segment["best"]}
    assert gap.value > 0.4 and gap.ci_low > 0.3
    cur, ref = _by_label(first.current), _by_label(first.reference)
    assert cur["thumbs_up_rate[topic=billing]"].ci_high < ref["thumbs_up_rate[topic=billing]"].ci_low
    text = _by_label(first.text)
    assert text["drift_score[column=prompt.embedding]"].value is None  # off by default, says so
    assert "monitor.text.embeddings: false" in text["drift_score[column=prompt.embedding]"].note
    assert "drift_score[column=prompt.words]" in text

    tr = Tracker.from_config(load_config(cfg_path))
    arts = {a.path for a in tr.client.list_artifacts(first.run_id)}
    assert {"drift_report.html", "drift_summary.json", "metrics_current.json"} <= arts


def test_the_second_run_reads_the_reference_from_the_profile_cache_with_the_same_results(monitored):
    _, first, second = monitored
    assert (first.reference_cached, second.reference_cached) == (False, True)
    assert second.n_reference == first.n_reference
    assert [(m.label(), m.value, m.passed) for m in second.drift] == [
        (m.label(), m.value, m.passed) for m in first.drift
    ]
    assert [m.model_dump() for m in second.reference] == [m.model_dump() for m in first.reference]


def test_evidently_ui_serves_the_project_and_the_runs_snapshots(monitored):
    _, first, second = monitored
    ws = first.workspace["workspace"]
    assert first.workspace["project_id"] == second.workspace["project_id"]
    with evidently_ui(ws) as (base, projects):
        (proj,) = [p for p in projects if p["id"] == first.workspace["project_id"]]
        assert proj["name"] == "mon"
        snaps = httpx.get(f"{base}/projects/{proj['id']}/snapshots", timeout=10).json()
        by_id = {s["id"]: s for s in snaps}
        assert {first.workspace["snapshot_id"], second.workspace["snapshot_id"]} <= set(by_id)
        assert by_id[first.workspace["snapshot_id"]]["metadata"]["mlflow_run_id"] == first.run_id
        page = httpx.get(f"{base}/projects/{proj['id']}/{first.workspace['snapshot_id']}/data", timeout=30)
        assert page.status_code == 200 and "latency_ms" in page.text


def test_driftloop_monitor_prints_the_compact_table(monitored, capsys, monkeypatch):
    from driftloop.app.report import console

    cfg_path, _, _ = monitored
    monkeypatch.setattr(console, "width", 250)  # pytest's capture is 80 columns wide; keep words whole
    assert main(["--config", str(cfg_path), "monitor"]) == 0
    out = capsys.readouterr().out
    assert "monitor: current 600 events vs reference 1800" in out
    assert "cached profile" in out
    assert "DRIFT" in out and "latency_ms" in out
    assert "segment_gap" in out and "billing" in out
    assert "evidently ui --workspace" in out


def test_both_windows_are_dataset_inputs_of_the_monitor_runs(monitored):
    cfg_path, first, second = monitored
    tr = Tracker.from_config(load_config(cfg_path))
    a, b = ({d.name: d for d in tr.run_datasets(r.run_id)} for r in (first, second))
    assert set(a) == set(b) == {"current-window", "reference-window"}
    assert a["current-window"].rows == 600 and a["current-window"].context == "monitoring"
    assert a["current-window"].source_type == "driftloop_store" and "ts >= " in a["current-window"].source
    # The same windows, the second reference from the profile cache: the same digests.
    assert a["reference-window"].digest == b["reference-window"].digest
    assert a["current-window"].digest == b["current-window"].digest
    # MLflow keeps one dataset per name and digest: the cached reference is the one read first.
    assert a["reference-window"].rows == b["reference-window"].rows == 1800
