"""Explicit event ids are unique within their source's id namespace, not across sources.

An HTTP client cannot pre-empt a file export's ids: a forged `order-42` posted
first and the export's real `order-42` are two events. Within one namespace
an id is still stored exactly once. Rows stored before the namespace was
recorded (migration 0006) keep their id in every namespace, so an upgrade
never stores an old event a second time.
"""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from driftloop.app.api import create_app
from driftloop.core.config import load_config
from driftloop.ingest import columnar, ingest_files
from driftloop.store import Store
from driftloop.store.models import Feedback

TOKEN = "t0ken-for-the-tests"
TS = "2026-11-01T10:00:00+00:00"


def api(store: Store) -> TestClient:
    cfg = load_config(None, env={}, check_files=False, overrides={"api": {"token": TOKEN}})
    return TestClient(create_app(cfg, store=store))


def post(client: TestClient, rows: list[dict]) -> dict:
    r = client.post("/v1/feedback", json=rows, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    return r.json()


def ingest(store: Store, files: list[Path], fast: bool):
    if fast:
        return ingest_files(store, files)
    with mock.patch.object(columnar, "fast_path_ok", lambda *a: False):
        return ingest_files(store, files)


def export(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def prompts_by_id(store: Store) -> dict[str, list[str]]:
    f = Feedback.__table__.c
    out: dict[str, list[str]] = {}
    with store.engine.connect() as conn:
        for eid, prompt in conn.execute(select(f.event_id, f.prompt).order_by(f.event_id, f.prompt)):
            out.setdefault(eid, []).append(prompt)
    return out


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "rows"])
def test_a_forged_api_id_does_not_pre_empt_the_file_source(store, tmp_path, fast):
    with api(store) as client:
        forged = post(client, [{"event_id": "order-42", "ts": TS, "prompt": "forged by a client"}])
        assert (forged["accepted"], forged["duplicates"]) == (1, 0)
        rows = [{"event_id": "order-42", "ts": TS, "prompt": "the real order"}]
        rows += [{"event_id": f"order-{i}", "ts": TS, "prompt": f"order {i}"} for i in range(50, 60)]
        report = ingest(store, [export(tmp_path / "orders.jsonl", rows)], fast)
        assert (report.accepted, report.duplicates) == (11, 0), "the file's real order-42 counted as a duplicate"
        assert prompts_by_id(store)["order-42"] == ["forged by a client", "the real order"]

        # Within each namespace an id is still stored once: a copy of the export, the same post again.
        again = ingest(store, [export(tmp_path / "orders-copy.jsonl", rows)], fast)
        assert (again.accepted, again.duplicates) == (0, 11)
        assert (post(client, [{"event_id": "order-42", "ts": TS, "prompt": "other"}])["duplicates"]) == 1
    assert store.count_events() == 12


def test_one_batch_repeating_an_id_keeps_the_first_in_its_namespace(store):
    from driftloop.core.types import FeedbackEvent
    from driftloop.store import Batch

    def ev(prompt: str) -> FeedbackEvent:
        return FeedbackEvent(event_id="x1", ts=TS, prompt=prompt)

    assert store.write_batch(Batch("a", [ev("first"), ev("second")], id_namespace="ns:a")) == (1, 1)
    assert store.write_batch(Batch("b", [ev("other")], id_namespace="ns:b")) == (1, 0)
    assert store.write_batch(Batch("a2", [ev("again")], id_namespace="ns:a")) == (0, 1)
    assert prompts_by_id(store)["x1"] == ["first", "other"]


def _store_at(url: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from driftloop.store.repo import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    s = Store(url)
    with s._writer.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    s.close()


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "rows"])
def test_rows_stored_before_the_upgrade_keep_their_id_everywhere(store_url, tmp_path, fast):
    """A store written at 0005 (ids global), upgraded: its events are not stored again by any source."""
    _store_at(store_url, "0005")
    old = Store(store_url)
    with old.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO feedback (event_id, ts, model_version, prompt, response, segment, metadata, source,"
                " ingested_at) VALUES ('order-42', :ts, '', 'stored before', '', '{}', '{}', 'old.jsonl', :ts)"
            ),
            {"ts": "2026-11-01 10:00:00.000000" if old.dialect == "sqlite" else TS},
        )
    old.close()
    with Store(store_url) as store:
        store.migrate()
        rows = [{"event_id": "order-42", "ts": TS, "prompt": "stored before"}]
        rows += [{"event_id": f"order-{i}", "ts": TS, "prompt": f"order {i}"} for i in range(50, 55)]
        report = ingest(store, [export(tmp_path / "orders.jsonl", rows)], fast)
        assert (report.accepted, report.duplicates) == (5, 1)
        with api(store) as client:
            assert post(client, [{"event_id": "order-42", "ts": TS, "prompt": "x"}])["duplicates"] == 1
        assert prompts_by_id(store)["order-42"] == ["stored before"]
        assert store.count_events() == 6


def test_a_prompt_sample_reads_each_event_once_when_two_sources_share_an_id(store):
    from datetime import UTC, datetime

    from driftloop.core.types import FeedbackEvent
    from driftloop.services.windows import read_prompt_sample
    from driftloop.store import Batch

    e = [FeedbackEvent(event_id="same", ts=TS, prompt=p) for p in ("one", "two")]
    store.write_batch(Batch("a", e[:1], id_namespace="ns:a"))
    store.write_batch(Batch("b", e[1:], id_namespace="ns:b"))
    got = read_prompt_sample(store, datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), 10, 100)
    assert sorted(got) == ["one", "two"]
