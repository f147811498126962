"""`driftloop ingest` end to end: files and a SQL source, the printed identity, MLflow metrics, no PII."""

from __future__ import annotations

import json
import sqlite3

from driftloop.app.cli import main
from driftloop.core.config import load_config
from driftloop.tracking import Tracker

TS = "2026-11-01T10:00:00+00:00"


def test_ingest_prints_the_identity_and_logs_it_to_mlflow_without_pii(tmp_path, prefect_harness, capsys):
    fb = tmp_path / "fb"
    fb.mkdir()
    (fb / "a.jsonl").write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"event_id": "j1", "ts": TS, "prompt": "mail zoe@example.net", "rating": 5},
                {"event_id": "j1", "ts": TS, "prompt": "mail zoe@example.net", "rating": 5},  # duplicate
                {"event_id": "j2", "ts": "2026-11-01T10:00:00", "prompt": "zoe@example.net"},  # no timezone
            ]
        )
    )
    (fb / "b.csv").write_text(f"id,when,text,thumb\nc1,{TS},call 415-555-0100,up\nc2,{TS},fine,meh\n")
    team = tmp_path / "team.db"
    with sqlite3.connect(team) as c:
        c.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, ts TEXT, prompt TEXT)")
        c.executemany("INSERT INTO log VALUES (?, ?, ?)", [(i, TS, f"sql row {i}") for i in range(1, 4)])
    cfg_path = tmp_path / "driftloop.yaml"
    cfg_path.write_text(f"""
sources:
  - path: fb/*.jsonl
  - path: fb/*.csv
    mapping: {{fields: {{event_id: id, ts: when, prompt: text, rating: thumb}}, rating_scale: thumbs}}
  - kind: sql
    url: sqlite:///{team}
    table: log
    watermark: id
""")
    assert main(["--config", str(cfg_path), "ingest"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "zoe@example.net" not in out + captured.err and "415-555-0100" not in out + captured.err
    assert "read 8 = accepted 5 + duplicates 1 + quarantined 2" in out
    assert "redacted: email x3, phone x1" in out
    assert main(["--config", str(cfg_path), "ingest"]) == 0
    assert "read 0 = accepted 0 + duplicates 0 + quarantined 0" in capsys.readouterr().out
    cfg = load_config(cfg_path, check_files=False)
    tracker = Tracker.from_config(cfg)
    import mlflow

    runs = mlflow.MlflowClient(cfg.tracking_uri).search_runs(
        [mlflow.MlflowClient(cfg.tracking_uri).get_experiment_by_name(cfg.tracking.experiment).experiment_id],
        order_by=["attributes.start_time ASC"],
    )
    # The second ingest read nothing new: it printed its identity but logged no MLflow run.
    assert [r.data.tags.get("driftloop.stage") for r in runs] == ["ingest"]
    first = runs[0].data.metrics
    assert (
        first["ingest/read"],
        first["ingest/accepted"],
        first["ingest/duplicates"],
        first["ingest/quarantined"],
        first["ingest/balanced"],
    ) == (8, 5, 1, 2, 1.0)
    assert first["ingest/redacted_email"] == 3 and tracker is not None
    store_db = cfg.state_path / "store.db"
    dump = b"".join(p.read_bytes() for p in cfg.state_path.rglob("*") if p.is_file())
    assert store_db.exists() and b"zoe@example.net" not in dump and b"415-555-0100" not in dump
