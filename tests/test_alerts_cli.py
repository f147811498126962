"""Alert webhooks: config validation, the CLI (test, list, retry, discard, rollback alerts) and the
HTTP feedback API's quarantine alerts, against a real HTTP receiver on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alert_peers import SECRET, down_url, hook_factory, sample_event, secret_env, setup, write_cfg  # noqa: F401 - fixtures (tests/ is on sys.path)

from driftloop.alerts import notify
from driftloop.alerts import receiver as recipe
from driftloop.app.cli import main
from driftloop.core.config import load_config
from driftloop.core.errors import ConfigError
from driftloop.store import Store, deadletter


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    "url,msg",
    [
        (
            "file:///etc/passwd",
            "alerts.webhooks.0: url: only http:// and https:// URLs with a host are accepted, got scheme 'file'",
        ),
        ("ftp://hooks.example.com/x", "got scheme 'ftp'"),
        ("javascript:alert(1)", "got scheme 'javascript'"),
        ("http:///no-host", "URLs with a host are accepted"),
        ("http://hooks.example.com:99999/x", "url: not a valid URL"),
    ],
)
def test_config_refuses_non_http_urls(tmp_path, secret_env, url, msg):
    with pytest.raises(ConfigError) as e:
        load_config(write_cfg(tmp_path, [{"name": "x", "url": url}]), env={})
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_config_honours_the_host_allow_list(tmp_path, secret_env, capsys):
    hooks = [
        {"name": "ok", "url": "https://hooks.slack.com/services/X"},
        {"name": "sub", "url": "https://alerts.corp.example/h"},
        {"name": "evil", "url": "https://evil.example.net/h"},
    ]
    path = write_cfg(tmp_path, hooks, allow_hosts=["hooks.slack.com", "*.corp.example"])
    with pytest.raises(
        ConfigError, match=r"alerts: webhooks.2.url: host 'evil.example.net' is not in alerts.allow_hosts$"
    ):
        load_config(path, env={})
    assert main(["--config", str(path), "alerts", "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "evil.example.net" in err
    cfg = load_config(write_cfg(tmp_path, hooks[:2], allow_hosts=["hooks.slack.com", "*.corp.example"]), env={})
    assert [w.name for w in cfg.alerts.webhooks] == ["ok", "sub"]


@pytest.mark.parametrize(
    "hook,msg",
    [
        (
            {"secret_env": "NOT_SET_ANYWHERE"},
            "alerts.webhooks.0.secret_env: environment variable NOT_SET_ANYWHERE is not set",
        ),
        ({"secret_env": None, "secret_file": "missing.key"}, "alerts.webhooks.0.secret_file: cannot read"),
        ({"secret_file": "k"}, "give exactly one of secret_env and secret_file"),
        ({"secret_env": "DRIFTLOOP_HOOK"}, "DRIFTLOOP_* variables are read as config keys"),
        ({"secret": "inline"}, "alerts.webhooks.0.secret: unknown key"),
        ({"name": "bad name"}, "alerts.webhooks.0.name"),
    ],
)
def test_config_refuses_a_missing_or_inline_secret(tmp_path, secret_env, hook, msg):
    with pytest.raises(ConfigError) as e:
        load_config(write_cfg(tmp_path, [{"name": "x", "url": "https://h.example/x", **hook}]), env={})
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_a_secret_file_signs_deliveries(tmp_path, hook_factory):
    hook = hook_factory()
    (tmp_path / "hook.key").write_text(SECRET + "\n")
    cfg, store = setup(tmp_path, [{"name": "f", "url": hook.url, "secret_env": None, "secret_file": "hook.key"}])
    (o,) = notify(cfg, store, sample_event(cfg, "retrain.finished"))
    assert o.ok and recipe.verify(SECRET, hook.requests[0][0], hook.requests[0][1])


# ------------------------------------------------------------------ CLI
def test_cli_test_list_and_retry(tmp_path, hook_factory, secret_env, capsys):
    hook = hook_factory()
    path = write_cfg(tmp_path, [{"name": "ops", "url": hook.url}])
    assert main(["--config", str(path), "alerts", "test"]) == 0
    ((h, body, _),) = hook.requests
    assert h["X-Driftloop-Event"] == "alert.test" and recipe.verify(SECRET, h, body)
    assert "ops (127.0.0.1" in capsys.readouterr().out
    assert main(["--config", str(path), "alerts", "test", "--webhook", "nope"]) == 2
    assert "--webhook nope: no such webhook" in capsys.readouterr().err

    # Two dead letters while the receiver was down, then `alerts retry` once it is up.
    down = write_cfg(tmp_path / "down", [{"name": "ops", "url": down_url()}])
    cfg = load_config(down, env={})
    store = Store(load_config(path, env={}).store_url)
    store.migrate()
    for t in ("retrain.started", "retrain.failed"):
        notify(cfg, store, sample_event(cfg, t))
    assert main(["--config", str(path), "alerts", "list"]) == 0
    out = capsys.readouterr().out
    assert "retrain.failed" in out and "ConnectError" in out and "2 undelivered" in out
    assert main(["--config", str(path), "alerts", "retry", "--webhook", "ops"]) == 0
    out = capsys.readouterr().out
    assert "2 delivered, 0 still failing" in out
    assert [json.loads(b)["type"] for _, b, _ in hook.requests[1:]] == ["retrain.started", "retrain.failed"]
    assert deadletter.pending(store) == []
    assert main(["--config", str(path), "alerts", "retry"]) == 0
    assert "no undelivered dead letters" in capsys.readouterr().out


def test_cli_discard_stops_retrying_a_removed_webhook_and_keeps_the_record(tmp_path, hook_factory, secret_env, capsys):
    hook = hook_factory()
    old = write_cfg(tmp_path / "old", [{"name": "gone", "url": down_url()}, {"name": "ops", "url": down_url()}])
    cfg = load_config(old, env={})
    path = write_cfg(tmp_path, [{"name": "ops", "url": hook.url}])  # "gone" removed, "ops" back up
    store = Store(load_config(path, env={}).store_url)
    store.migrate()
    for t in ("retrain.started", "retrain.failed"):
        notify(cfg, store, sample_event(cfg, t))
    rows = deadletter.pending(store)
    gone = [r["id"] for r in rows if r["webhook"] == "gone"]
    assert len(rows) == 4 and len(gone) == 2
    assert main(["--config", str(path), "alerts", "retry"]) == 1  # "gone" can never be delivered
    assert "2 delivered, 2 still failing" in capsys.readouterr().out
    # Nothing selected, or an id that is not pending: exit 2, nothing discarded.
    assert main(["--config", str(path), "alerts", "discard"]) == 2
    assert main(["--config", str(path), "alerts", "discard", "--id", str(gone[0]), "--id", "999"]) == 2
    assert "--id 999: no pending dead letter" in capsys.readouterr().err and len(deadletter.pending(store)) == 2
    assert main(["--config", str(path), "alerts", "discard", "--webhook", "gone"]) == 0
    assert f"2 dead letter(s) discarded: #{gone[0]}, #{gone[1]}" in capsys.readouterr().out
    assert deadletter.pending(store) == []
    assert main(["--config", str(path), "alerts", "retry"]) == 0  # nothing left to fail
    assert main(["--config", str(path), "alerts", "list", "--all"]) == 0
    out = capsys.readouterr().out
    assert out.count("discarded 20") == 2 and out.count("delivered 20") == 2 and "0 undelivered" in out
    assert deadletter.discard(store, webhook="gone") == []  # already discarded: left as it is


def test_cli_rollback_and_manual_promote_alert(tmp_path, hook_factory, secret_env):
    from driftloop.tracking import Tracker

    hook = hook_factory()
    path = write_cfg(tmp_path, [{"name": "ops", "url": hook.url}], mlflow_ui_url="http://ui:5000")
    tr = Tracker.from_config(load_config(path, env={}))
    versions = []
    for k in range(2):
        (tmp_path / f"m{k}").mkdir()
        (tmp_path / f"m{k}" / "w.txt").write_text(str(k))
        run = tr.start_run(f"register-{k}")
        versions.append(tr.register_model(run, tmp_path / f"m{k}"))
        tr.end_run(run)
    tr.move_champion(versions[0], by="driftloop", reason="base", how="initial")
    assert main(["--config", str(path), "promote", versions[1], "--reason", "hotfix", "--by", "ana"]) == 0
    assert main(["--config", str(path), "rollback", "--reason", "complaints", "--by", "bo"]) == 0
    got = [json.loads(b) for _, b, _ in hook.requests]
    assert [(p["type"], p["model"]["version"], p["model"]["previous_version"], p["reasons"]) for p in got] == [
        ("candidate.promoted", versions[1], versions[0], ["manual by ana: hotfix"]),
        ("champion.rolled_back", versions[0], versions[1], ["rollback by bo: complaints"]),
    ]
    history = tr.champion_history()
    assert got[1]["mlflow"]["run_id"] == history[0]["run_id"]
    assert got[1]["mlflow"]["url"].startswith("http://ui:5000/#/experiments/")


def test_dead_letter_migration_matches_the_model(store):
    """Migration 0002 creates exactly what the ORM describes, on SQLite and PostgreSQL."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    from driftloop.store.models import Base

    assert "alert_dead_letter" in inspect(store.engine).get_table_names()
    with store.engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={"compare_type": True, "version_table": "driftloop_alembic_version"})
        assert compare_metadata(ctx, Base.metadata) == []


def test_alerts_page_shows_the_tested_receiver_verbatim():
    """The alerts how-to's copy-paste receiver (and its `verify`, the documented recipe) is this very file."""
    readme = (Path(__file__).resolve().parents[1] / "docs" / "how-to" / "alerts.md").read_text(encoding="utf-8")
    start, end = "<!-- alerts-receiver:start -->", "<!-- alerts-receiver:end -->"
    assert start in readme and end in readme, "docs/how-to/alerts.md: the receiver markers are missing"
    source = Path(recipe.__file__).read_text(encoding="utf-8")
    code = source.split('"""\n', 1)[1].lstrip("\n")  # the file after its module docstring
    assert readme.split(start, 1)[1].split(end, 1)[0].strip() == f"```python\n{code}```"


# ------------------------------------------------------------------ the HTTP feedback API
def _api(tmp_path, hook, window_s: float):
    from fastapi.testclient import TestClient

    from driftloop.app.api import create_app

    path = write_cfg(
        tmp_path,
        [{"name": "ops", "url": hook.url}],
        quarantine_threshold=0.2,
        api_quarantine_window_seconds=window_s,
        api_quarantine_min_rows=10,
    )
    cfg = load_config(path, env={"DRIFTLOOP_API__TOKEN": "t0ken-for-the-tests"})
    store = Store(cfg.store_url)
    store.migrate()
    return TestClient(create_app(cfg, store=store))


GOOD_EVENTS = [{"event_id": f"q{i}", "ts": "2026-11-01T10:00:00+00:00", "prompt": f"question {i}"} for i in range(30)]
BAD_EVENT = {"ts": "2026-11-01 10:00", "prompt": "no timezone"}
API_AUTH = {"Authorization": "Bearer t0ken-for-the-tests"}


def test_the_feedback_api_sends_one_quarantine_alert_per_breaching_window(tmp_path, hook_factory, secret_env):
    hook = hook_factory()
    with _api(tmp_path, hook, window_s=3600) as client:  # windows closed by hand here; the thread is tested below
        watch = client.app.state.quarantine_watch
        # Window 1: 3 requests, 6 of 21 judged events quarantined (29% > 20%): one alert for the window.
        for k in range(3):
            got = client.post(
                "/v1/feedback", json=GOOD_EVENTS[5 * k : 5 * k + 5] + [BAD_EVENT] * 2, headers=API_AUTH
            ).json()
            assert (got["accepted"], got["quarantined"]) == (5, 2)
        assert [o.ok for o in watch.flush()] == [True]
        assert watch.flush() == []  # an empty window sends nothing
        # Window 2: under the threshold (2 of 17); window 3 (closed at shutdown): 5 events, under min_rows.
        client.post("/v1/feedback", json=GOOD_EVENTS[15:30] + [BAD_EVENT] * 2, headers=API_AUTH)
        assert watch.flush() == []
        client.post("/v1/feedback", json=[BAD_EVENT] * 5, headers=API_AUTH)
    assert len(hook.requests) == 1, [json.loads(b)["type"] for _, b, _ in hook.requests]
    headers, body, _ = hook.requests[0]
    p = json.loads(body)
    assert recipe.verify(SECRET, headers, body) and p["type"] == "ingest.quarantine"
    assert p["reasons"][0].startswith("6 of 21 rows quarantined (28.6% > alerts.quarantine_threshold 20.0%) by POST")
    assert p["reasons"][1] == "ts: no timezone: 6 row(s)"
    assert p["data"] == {"read": 21, "accepted": 15, "duplicates": 0, "quarantined": 6, "quarantined_share": 0.2857}


def test_the_feedback_api_closes_its_windows_in_a_thread_and_at_shutdown(tmp_path, hook_factory, secret_env):
    import time

    hook = hook_factory()
    with _api(tmp_path, hook, window_s=0.2) as client:
        client.post("/v1/feedback", json=GOOD_EVENTS[:10] + [BAD_EVENT] * 10, headers=API_AUTH)
        deadline = time.monotonic() + 20
        while not hook.requests and time.monotonic() < deadline:  # no request ends this window: the thread does
            time.sleep(0.05)
        assert len(hook.requests) == 1
    hook2 = hook_factory()
    with _api(tmp_path / "b", hook2, window_s=3600) as client:
        client.post("/v1/feedback", json=GOOD_EVENTS[:10] + [BAD_EVENT] * 10, headers=API_AUTH)
    assert len(hook2.requests) == 1  # the window was judged at shutdown, not lost
    assert json.loads(hook2.requests[0][1])["data"]["quarantined"] == 10
