"""The store on SQLite and on PostgreSQL: schema, dedupe, windows, items, loop state, samples."""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import StatementError

from driftloop.core.types import FeedbackEvent, SampleResults
from driftloop.store import Store
from driftloop.store.models import Base

T0 = datetime(2026, 11, 1, tzinfo=UTC)
TABLES = {
    "alert_dead_letter",
    "feedback",
    "quarantine",
    "ingest_checkpoint",
    "loop_state",
    "loop_transition",
    "eval_item",
    "sample_result",
}


def ev(i: int, **kw) -> FeedbackEvent:
    base = dict(
        event_id=f"e{i:04d}",
        ts=T0 + timedelta(hours=i),
        model_version="1",
        prompt=f"question {i}",
        response=f"answer {i}",
        rating=0.75,
        rating_raw="4",
        thumbs_up=True,
        segment={"topic": "billing"},
    )
    base.update(kw)
    return FeedbackEvent(**base)


def test_migrate_creates_every_table_and_is_idempotent(store_url):
    s = Store(store_url)
    s.migrate()
    s.migrate()
    Store(store_url).migrate()  # a second process-like instance finds the schema current
    tables = set(inspect(s.engine).get_table_names())
    assert TABLES | {"driftloop_alembic_version"} <= tables
    # The store keeps its own version table, so it can share a database with MLflow.
    assert "alembic_version" not in tables
    from alembic.script import ScriptDirectory

    from driftloop.store.repo import MIGRATIONS

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    with s.engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM driftloop_alembic_version")).scalars().all() == [head]
        # The migrations and the ORM models describe the same schema.
        ctx = MigrationContext.configure(c, opts={"compare_type": True, "version_table": "driftloop_alembic_version"})
        assert compare_metadata(ctx, Base.metadata) == []
    s.close()


def test_migrate_works_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Store(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'store.db'}")
    s.migrate()
    assert s.count_events() == 0


def test_sqlite_connections_use_wal_and_a_busy_timeout(sqlite_store):
    with sqlite_store.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_add_events_skips_duplicates_within_a_batch_and_across_calls(store):
    events = [ev(i) for i in range(5)]
    assert store.add_events(events + [events[0], events[3]], source="a") == (5, 2)
    assert store.add_events(events[2:] + [ev(9)], source="b") == (1, 3)
    assert store.count_events() == 6


def test_checkpoint_commits_or_rolls_back_with_its_batch(store):
    assert store.get_checkpoint("file:x") is None
    store.add_batch(
        [ev(0)],
        [{"source": "x", "raw": "{", "field": "(line)", "reason": "malformed JSON"}],
        source="x",
        checkpoint=("file:x", "100"),
    )
    assert (store.get_checkpoint("file:x"), store.count_events(), store.count_quarantine()) == ("100", 1, 1)
    # A set is not JSON: the batch fails while writing, after the good event.
    bad = ev(2, metadata={"tags": {"a"}})
    with pytest.raises((StatementError, TypeError)):  # wrapped or not, by driver
        store.add_batch(
            [ev(1), bad],
            [{"source": "x", "raw": "?", "field": "f", "reason": "r"}],
            source="x",
            checkpoint=("file:x", "200"),
        )
    assert (store.get_checkpoint("file:x"), store.count_events(), store.count_quarantine()) == ("100", 1, 1)


def test_quarantine_keeps_text_that_postgres_could_not_store_raw(store):
    assert store.add_quarantine([{"source": "s", "raw": "a\x00b\ud800", "field": "(line)", "reason": "r"}]) == 1
    with store.engine.connect() as c:
        raw = c.execute(text("SELECT raw FROM quarantine")).scalar_one()
    assert raw.startswith("a\ufffdb") and store.count_quarantine() == 1


def test_time_bounds_are_utc(store):
    assert store.time_bounds() is None
    plus2 = timezone(timedelta(hours=2))
    store.add_events(
        [ev(0, ts=datetime(2026, 11, 1, 10, tzinfo=plus2)), ev(1, ts=datetime(2026, 11, 3, tzinfo=plus2))], "s"
    )
    lo, hi = store.time_bounds()
    assert lo == datetime(2026, 11, 1, 8, tzinfo=UTC) and lo.utcoffset() == timedelta(0)
    assert hi == datetime(2026, 11, 2, 22, tzinfo=UTC) and hi.tzinfo is not None


def test_read_window_columns_bounds_and_segments(store):
    store.add_events(
        [
            ev(0, prompt="héllo wörld", response="", segment={"topic": "billing", "tier": "pro"}),
            ev(
                1,
                thumbs_up=False,
                rating=None,
                rating_raw=None,
                correction="the fix",
                latency_ms=120.5,
                tokens_in=7,
                tokens_out=3,
                segment={},
            ),
            ev(2, thumbs_up=None, segment={"topic": "returns"}),
            ev(3),  # at `end`: excluded
        ],
        source="s",
    )
    df = store.read_window(T0, T0 + timedelta(hours=3), ["topic", "tier"])
    assert list(df.columns) == [
        "event_id",
        "ts",
        "model_version",
        "prompt_len",
        "response_len",
        "latency_ms",
        "tokens_in",
        "tokens_out",
        "rating",
        "thumbs_up",
        "has_correction",
        "topic",
        "tier",
    ]
    assert df["event_id"].tolist() == ["e0000", "e0001", "e0002"]
    assert str(df["ts"].dtype) == "datetime64[ns, UTC]" and df["ts"].iloc[0] == T0
    assert df["prompt_len"].tolist() == [11, 10, 10]  # characters, not bytes
    assert df["response_len"].tolist() == [0, 8, 8]
    assert df["thumbs_up"].iloc[:2].tolist() == [1.0, 0.0] and math.isnan(df["thumbs_up"].iloc[2])
    assert df["rating"].iloc[0] == 0.75 and math.isnan(df["rating"].iloc[1])
    assert df["has_correction"].tolist() == [False, True, False] and df["has_correction"].dtype == bool
    assert df["latency_ms"].iloc[1] == 120.5 and df["tokens_in"].iloc[1] == 7.0
    assert df["topic"].tolist() == ["billing", "", "returns"]
    assert df["tier"].tolist() == ["pro", "", ""]
    empty = store.read_window(T0 - timedelta(days=9), T0, ["topic"])
    assert len(empty) == 0 and list(empty.columns)[-1] == "topic" and str(empty["ts"].dtype) == "datetime64[ns, UTC]"


def test_read_window_refuses_naive_bounds_and_clashing_segment_names(sqlite_store):
    with pytest.raises(ValueError, match="timezone-aware"):
        sqlite_store.read_window(datetime(2026, 1, 1), T0, [])
    with pytest.raises(ValueError, match="clash"):
        sqlite_store.read_window(T0, T0 + timedelta(days=1), ["rating"])


def test_corrected_events_in_time_order_since_a_point(store):
    store.add_events([ev(2, correction="c2"), ev(0, correction="c0"), ev(1), ev(3, correction="c3")], "s")
    assert [e["event_id"] for e in store.corrected_events()] == ["e0000", "e0002", "e0003"]
    later = store.corrected_events(since=T0 + timedelta(hours=2))
    assert [e["correction"] for e in later] == ["c2", "c3"]
    assert set(later[0]) == {"event_id", "ts", "prompt", "response", "correction", "segment"}
    assert later[0]["segment"] == {"topic": "billing"} and later[0]["ts"].tzinfo is not None


def test_items_are_insert_only_and_a_golden_item_stays_golden(store):
    item = {"item_id": "i1", "prompt_key": "k1", "split": "golden", "prompt": "p", "answer": "a"}
    assert store.add_items([item, {**item, "item_id": "i2", "prompt_key": "k2", "split": "train"}]) == 2
    assert store.add_items([{**item, "split": "train", "answer": "changed"}]) == 0
    golden = store.items("golden")
    assert [(i["item_id"], i["answer"]) for i in golden] == [("i1", "a")]
    assert [i["item_id"] for i in store.items("train")] == ["i2"]
    assert len(store.items()) == 2
    assert store.item_splits() == {"k1": "golden", "k2": "train"}
    with pytest.raises(ValueError, match="split"):
        store.add_items([{**item, "item_id": "i3", "split": "test"}])


def test_state_defaults_to_armed(store):
    st = store.get_state("demo")
    assert (st["state"], st["version"], st["lease_owner"]) == ("armed", 0, None)
    assert abs((datetime.now(UTC) - st["since"]).total_seconds()) < 60
    assert store.history("demo") == []


def test_transition_is_compare_and_set_under_a_lease(store):
    assert store.transition("p", "triggered", "drop 0.19", owner="A", expected={"armed"}, data={"run": 1})
    assert not store.transition("p", "triggered", "again", owner="A", expected={"armed"})  # state moved on
    assert not store.transition("p", "retraining", "steal", owner="B", expected={"triggered"})  # A's lease lives
    assert store.transition("p", "retraining", "go", owner="A", expected={"triggered"}, lease_seconds=0.05)
    time.sleep(0.1)  # A's lease has expired
    assert store.transition("p", "evaluating", "resume after crash", owner="B", expected={"retraining"})
    st = store.get_state("p")
    assert (st["state"], st["lease_owner"], st["reason"], st["data"]) == ("evaluating", "B", "resume after crash", {})
    assert st["lease_expires"] > datetime.now(UTC) + timedelta(seconds=500)
    hist = store.history("p")
    assert [(h["from_state"], h["to_state"], h["owner"]) for h in hist] == [
        ("retraining", "evaluating", "B"),
        ("triggered", "retraining", "A"),
        ("armed", "triggered", "A"),
    ]
    assert hist[-1]["data"] == {"run": 1} and len(store.history("p", limit=1)) == 1
    assert not store.release("p", "A")
    assert store.release("p", "B")
    assert store.get_state("p")["lease_owner"] is None
    assert store.transition("p", "promoted", "better", owner="C", expected={"evaluating"})


def test_renewal_keeps_since_and_a_new_state_resets_it(store):
    assert store.transition("p", "triggered", "breach", owner="A")
    assert store.transition("p", "retraining", "start", owner="A")
    since = store.get_state("p")["since"]
    time.sleep(0.01)
    assert store.transition("p", "retraining", "heartbeat", owner="A", expected={"retraining"})
    assert store.get_state("p")["since"] == since
    assert store.transition("p", "evaluating", "done", owner="A")
    assert store.get_state("p")["since"] > since


def _race_worker(url: str, barrier, queue, owner: str) -> None:
    s = Store(url)
    s.get_state("warm-up")  # connect before the start line, so the race is on the transition
    won = []
    for project in ("fresh", "existing"):
        barrier.wait(timeout=60)
        won.append(s.transition(project, "triggered", "race", owner=owner, expected={"armed"}))
    queue.put((owner, won))
    s.close()


def test_racing_processes_exactly_one_wins(store):
    # "fresh" races on the first insert, "existing" on the version compare-and-set.
    assert store.transition("existing", "armed", "setup", owner="setup")
    assert store.release("existing", "setup")
    ctx = mp.get_context("spawn")
    n = 3
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(store.url, barrier, queue, f"p{i}")) for i in range(n)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for round_, project in enumerate(("fresh", "existing")):
        winners = [o for o, won in results.items() if won[round_]]
        assert len(winners) == 1, (project, results)
        st = store.get_state(project)
        assert (st["state"], st["lease_owner"]) == ("triggered", winners[0])
        assert [h["owner"] for h in store.history(project) if h["to_state"] == "triggered"] == winners


def test_sample_results_round_trip_and_replace(store):
    assert store.load_samples("k") is None
    store.save_samples("k", "canary", "m1", "acc", {"a": 1.0, "b": 0.0}, {"a": {"chosen": 2}})
    got = store.load_samples("k")
    assert got == {
        "task": "canary",
        "model": "m1",
        "metric": "acc",
        "items": {"a": 1.0, "b": 0.0},
        "detail": {"a": {"chosen": 2}},
    }
    assert SampleResults(**got).mean == 0.5
    store.save_samples("k", "canary", "m1", "acc", {"c": 1.0}, {})
    assert store.load_samples("k")["items"] == {"c": 1.0}
