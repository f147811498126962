"""`driftloop gc`: old HTML reports, job records, unregistered models and retrain job folders go;
a registered version's files, summaries and metrics stay. `retention.drift_html` thins the HTML."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from driftloop.app.cli import main
from driftloop.core.config import load_config
from driftloop.services.gc import collect_garbage, parse_age
from driftloop.tracking import Tracker


@pytest.fixture
def state(tmp_path: Path):
    cfg_path = tmp_path / "driftloop.yaml"
    cfg_path.write_text("project: gc\nstate_dir: st\n")
    cfg = load_config(cfg_path, env={}, check_files=False)
    tr = Tracker.from_config(cfg)
    model = tmp_path / "weights"
    model.mkdir()
    (model / "weights.txt").write_text("w")
    run = tr.start_run("retrain")
    tr.log_text(run, "<html>report</html>", "drift_report.html")
    tr.log_dict(run, {"outcome": "x"}, "cycle_summary.json")
    job = tmp_path / "job"
    job.mkdir()
    (job / "metrics.json").write_text("{}")
    tr.log_artifacts(run, job, "job")
    version = tr.register_model(run, model)
    orphan = tr.client.create_logged_model(tr.experiment_id, name="orphan", source_run_id=run)
    tr.client.log_model_artifacts(orphan.model_id, str(model))
    tr.end_run(run)
    folder = cfg.state_path / "retrain" / "abc-123"
    folder.mkdir(parents=True)
    (folder / "data.jsonl").write_text("{}\n")
    time.sleep(0.05)
    return cfg_path, cfg, tr, run, version, orphan, folder


def test_gc_removes_the_old_and_unregistered_and_keeps_every_version(state):
    cfg_path, cfg, tr, run, version, orphan, folder = state
    dry = collect_garbage(cfg, tr, older_than_days=1e-9, dry_run=True, progress=lambda s: None)
    assert sorted(r.kind for r in dry.removed) == ["retrain job folder", "run html", "run job", "unregistered model"]
    assert folder.exists() and {a.path for a in tr.client.list_artifacts(run)} >= {"drift_report.html", "job"}

    done = collect_garbage(cfg, tr, older_than_days=1e-9, dry_run=False, progress=lambda s: None)
    assert [r.path for r in done.removed] == [r.path for r in dry.removed] and done.freed_bytes > 0
    assert {a.path for a in tr.client.list_artifacts(run)} == {"cycle_summary.json"}
    assert not folder.exists()
    assert not Path(orphan.artifact_location).exists()
    _, files = tr.resolve(version)  # the registered version is whole
    assert (files / "weights.txt").read_text() == "w"

    again = collect_garbage(cfg, tr, older_than_days=1e-9, dry_run=False, progress=lambda s: None)
    assert again.removed == []


def test_nothing_newer_than_the_cutoff_goes(state, capsys):
    cfg_path, cfg, tr, run, *_ = state
    assert main(["--config", str(cfg_path), "gc", "--older-than", "30d"]) == 0
    assert "removed 0 item(s)" in capsys.readouterr().out
    assert "drift_report.html" in {a.path for a in tr.client.list_artifacts(run)}


def test_a_bad_age_exits_2_naming_it(state, capsys):
    cfg_path, *_ = state
    assert main(["--config", str(cfg_path), "gc", "--older-than", "soon"]) == 2
    assert "--older-than: 'soon' is not an age like 30d or 12h" in capsys.readouterr().err
    assert parse_age("12h") == 0.5


def test_drift_html_on_drift_or_once_a_day(tmp_path):
    from driftloop.core.types import MetricResult
    from flows.monitor import _html_due

    def ctx(mode: str):
        return SimpleNamespace(cfg=SimpleNamespace(state_path=tmp_path, retention=SimpleNamespace(drift_html=mode)))

    ok = [MetricResult(source="drift", name="drift_score", value=0.1, passed=True)]
    bad = [MetricResult(source="drift", name="drift_score", value=0.9, passed=False)]
    assert _html_due(ctx("always"), ok) and _html_due(ctx("always"), ok)
    daily = ctx("on_drift_or_daily")
    assert _html_due(daily, ok)  # the first of the day
    assert not _html_due(daily, ok)  # no drift, already one today
    assert _html_due(daily, bad)  # drift: always stored
