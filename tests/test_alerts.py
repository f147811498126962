"""Alert webhooks against a real HTTP receiver on loopback: payloads in both formats, signatures
checked with the documented recipe, retries, dead letters, config validation and the CLI."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from driftloop.alerts import EVENT_TYPES, make_event, notify, resend
from driftloop.alerts import receiver as recipe
from driftloop.alerts.deliver import backoff
from driftloop.alerts.events import TITLES
from driftloop.alerts.signing import sign_headers, verify
from driftloop.app.cli import main
from driftloop.core.config import load_config
from driftloop.core.errors import ConfigError
from driftloop.store import Store, deadletter

SECRET = "s3cret-Hx9-never-logged"


class Hook:
    """A webhook receiver in a thread: answers each POST with the next scripted status (then 200)."""

    def __init__(self, statuses=(), delay_s: float = 0.0):
        self.statuses, self.delay_s, self.requests = list(statuses), delay_s, []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = hook.statuses.pop(0) if hook.statuses else 200
                hook.requests.append((self.headers, body, status))
                time.sleep(hook.delay_s)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):  # keep pytest's output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0K3N"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_factory():
    hooks = []

    def make(*statuses, delay_s: float = 0.0) -> Hook:
        hooks.append(Hook(statuses, delay_s))
        return hooks[-1]

    yield make
    for h in hooks:
        h.close()


def down_url() -> str:
    """A loopback URL nothing listens on (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/T0K3N"


def write_cfg(folder: Path, webhooks: list[dict], **alerts) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    body = {
        "retries": 2,
        "backoff_seconds": 0.0,
        "backoff_jitter": False,
        "timeout_seconds": 2.0,
        **alerts,
        "webhooks": [{"secret_env": "HOOK_SECRET", **w} for w in webhooks],
    }
    p = folder / "driftloop.yaml"
    p.write_text(yaml.safe_dump({"project": "shop", "state_dir": "st", "alerts": body}))
    return p


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", SECRET)


def setup(tmp_path, webhooks, **alerts):
    cfg = load_config(write_cfg(tmp_path, webhooks, **alerts), env={})
    store = Store(cfg.store_url)
    store.migrate()
    return cfg, store


def sample_event(cfg, type_: str):
    return make_event(
        cfg,
        type_,
        model_version="2",
        previous_version="1",
        cycle="20261126-0300-ab12",
        reasons=[
            "thumbs-up rate in topic=billing fell 0.81 [0.79,0.83] -> 0.62 [0.58,0.66]",
            "golden: challenger +0.31 [0.22, 0.40], p<0.001",
        ],
        run_id="0f3c9d",
        experiment_id="1",
        data={"n": 120},
    )


# ------------------------------------------------------------------ payloads and signatures
def test_every_event_type_in_both_formats_arrives_signed(tmp_path, hook_factory, secret_env):
    hook = hook_factory()
    cfg, store = setup(
        tmp_path,
        [{"name": "generic", "url": hook.url, "format": "json"}, {"name": "chat", "url": hook.url, "format": "slack"}],
        mlflow_ui_url="http://mlflow.internal:5000/",
    )
    sent = {}
    for t in EVENT_TYPES:
        ev = sample_event(cfg, t)
        sent[ev.id] = ev
        outcomes = notify(cfg, store, ev)
        assert [(o.webhook, o.ok, o.attempts) for o in outcomes] == [("generic", True, 1), ("chat", True, 1)]
    assert len(hook.requests) == 2 * len(EVENT_TYPES)
    formats = {"json": set(), "slack": set()}
    for headers, body, _ in hook.requests:
        # The documented recipe (README) and the library's verify both accept every delivery.
        assert recipe.verify(SECRET, headers, body)
        assert verify(SECRET, dict(headers.items()), body, now=time.time())
        event_id, webhook = headers["X-Driftloop-Delivery"].rsplit(".", 1)
        ev = sent[event_id]
        assert headers["X-Driftloop-Event"] == ev.type
        payload = json.loads(body)
        if webhook == "generic":
            assert payload == json.loads(ev.model_dump_json())
            assert payload["version"] == 1 and payload["model"] == {
                "name": "driftloop-model",
                "version": "2",
                "previous_version": "1",
            }
            assert payload["mlflow"]["url"] == "http://mlflow.internal:5000/#/experiments/1/runs/0f3c9d"
            formats["json"].add(ev.type)
        else:
            assert payload["text"].endswith(ev.summary) and payload["blocks"][0]["text"]["text"] == TITLES[ev.type]
            text = json.dumps(payload["blocks"], ensure_ascii=False)
            # Escaped for Slack's mrkdwn, where "<" and ">" delimit links.
            assert (
                "fell 0.81 [0.79,0.83] -&gt; 0.62" in text
                and "p&lt;0.001" in text
                and "<http://mlflow.internal:5000/#/experiments/1/runs/0f3c9d|MLflow run>" in text
            )
            formats["slack"].add(ev.type)
    assert formats == {"json": set(EVENT_TYPES), "slack": set(EVENT_TYPES)}
    assert deadletter.rows(store, include_delivered=True) == []


def test_run_link_comes_from_an_http_tracking_uri_and_is_absent_otherwise(tmp_path):
    cfg = load_config(write_cfg(tmp_path, []), env={}, overrides={"tracking": {"uri": "https://mlflow.example.com/"}})
    assert (
        make_event(cfg, "retrain.started", run_id="r1", experiment_id="7").mlflow.url
        == "https://mlflow.example.com/#/experiments/7/runs/r1"
    )
    local = load_config(write_cfg(tmp_path, []), env={})
    assert make_event(local, "retrain.started", run_id="r1", experiment_id="7").mlflow.url is None


@pytest.mark.parametrize("mutate", ["body", "old", "future", "secret", "scheme", "missing"])
def test_verification_fails_for_tampered_replayed_or_unsigned_deliveries(mutate):
    body = b'{"type":"candidate.promoted","model":{"version":"2"}}'
    now = 1_764_129_600
    headers = sign_headers(SECRET, body, timestamp=now, event_type="candidate.promoted", delivery="evt_1.ops")
    assert recipe.verify(SECRET, headers, body, now=now + 299) and verify(SECRET, headers, body, now=now + 299)
    secret, at = SECRET, now + 10
    if mutate == "body":
        body = body.replace(b'"2"', b'"3"')
    elif mutate == "old":  # the same signed delivery replayed after the 300 s window
        at = now + 301
    elif mutate == "future":
        at = now - 301
    elif mutate == "secret":
        secret = "another-secret"
    elif mutate == "scheme":
        headers["X-Driftloop-Signature"] = headers["X-Driftloop-Signature"].replace("v1=", "v0=")
    else:
        del headers["X-Driftloop-Timestamp"]
    assert not recipe.verify(secret, headers, body, now=at)
    assert not verify(secret, headers, body, now=at)


# ------------------------------------------------------------------ retries and dead letters
@pytest.mark.parametrize(
    "script,ok,attempts,codes",
    [
        ((500, 500, 200), True, 3, [500, 500, 200]),
        ((429, 503, 200), True, 3, [429, 503, 200]),
        ((404,), False, 1, [404]),  # a client error is final: never retried
        ((500, 500, 500, 200), False, 3, [500, 500, 500]),  # retries: 2 -> 3 attempts, then a dead letter
    ],
)
def test_retries_with_backoff_then_dead_letter(tmp_path, hook_factory, secret_env, script, ok, attempts, codes):
    hook = hook_factory(*script)
    cfg, store = setup(tmp_path, [{"name": "ops", "url": hook.url}], backoff_seconds=0.01)
    waits = []
    ev = sample_event(cfg, "retrain.failed")
    (o,) = notify(cfg, store, ev, sleep=waits.append)
    assert (o.ok, o.attempts) == (ok, attempts)
    assert [s for _, _, s in hook.requests] == codes
    assert sum(s == 200 for _, _, s in hook.requests) == int(ok)  # exactly one successful delivery
    assert waits == [0.01 * 2**k for k in range(attempts - 1)]  # exponential, jitter off
    # One delivery id for every attempt (receivers dedupe on it); each attempt signed afresh.
    assert {h["X-Driftloop-Delivery"] for h, _, _ in hook.requests} == {f"{ev.id}.ops"}
    assert all(recipe.verify(SECRET, h, b) for h, b, _ in hook.requests)
    rows = deadletter.rows(store, include_delivered=True)
    if ok:
        assert rows == []
    else:
        assert len(rows) == 1 and o.dead_letter_id == rows[0]["id"]
        r = rows[0]
        assert (r["webhook"], r["event_type"], r["event_id"], r["attempts"], r["delivered_at"]) == (
            "ops",
            "retrain.failed",
            ev.id,
            attempts,
            None,
        )
        assert r["last_error"] == f"HTTP {codes[-1]}" and json.loads(r["body"]) == json.loads(ev.model_dump_json())


def test_backoff_doubles_is_capped_and_jitter_stays_within_half():
    assert [backoff(k, 1.5, jitter=False) for k in (1, 2, 3, 4)] == [1.5, 3.0, 6.0, 12.0]
    assert backoff(12, 1.0, jitter=False) == 60.0
    assert backoff(3, 2.0, jitter=True, rng=lambda: 0.0) == 4.0
    assert backoff(3, 2.0, jitter=True, rng=lambda: 0.999999) == pytest.approx(8.0, rel=1e-5)


def test_down_receiver_leaves_a_dead_letter_that_retry_delivers(store, tmp_path, hook_factory, secret_env):
    """On SQLite and PostgreSQL: a refused connection is retried, then dead-lettered; `resend`
    later delivers the same bytes to the webhook of that name and marks the row."""
    cfg = load_config(write_cfg(tmp_path / "a", [{"name": "ops", "url": down_url(), "format": "slack"}]), env={})
    ev = sample_event(cfg, "candidate.rejected")
    t0 = time.monotonic()
    (o,) = notify(cfg, store, ev)
    assert time.monotonic() - t0 < 5  # bounded: connection refused is immediate, backoff 0
    assert not o.ok and o.attempts == 3 and o.error.startswith("ConnectError")
    (row,) = deadletter.pending(store)
    assert row["event_type"] == "candidate.rejected" and row["attempts"] == 3 and row["created_at"].tzinfo

    hook = hook_factory()
    fixed = load_config(write_cfg(tmp_path / "b", [{"name": "ops", "url": hook.url, "format": "slack"}]), env={})
    (again,) = resend(fixed, store)
    assert again.ok and again.dead_letter_id == row["id"]
    ((h, body, _),) = hook.requests
    assert body.decode() == row["body"] and recipe.verify(SECRET, h, body)
    assert h["X-Driftloop-Delivery"] == f"{ev.id}.ops"
    assert deadletter.pending(store) == []
    (done,) = deadletter.rows(store, include_delivered=True)
    assert done["delivered_at"] is not None and done["attempts"] == 4


def test_event_filter_and_a_slow_receiver_never_block(tmp_path, hook_factory, secret_env):
    fast, slow = hook_factory(), hook_factory(delay_s=1.0)
    cfg, store = setup(
        tmp_path,
        [
            {"name": "only-promotions", "url": fast.url, "events": ["candidate.promoted"]},
            {"name": "slow", "url": slow.url},
        ],
        timeout_seconds=0.2,
        retries=1,
    )
    t0 = time.monotonic()
    outcomes = notify(cfg, store, sample_event(cfg, "retrain.started"))
    assert time.monotonic() - t0 < 3  # 2 attempts x 0.2 s timeout, not 2 x 1 s
    assert [(o.webhook, o.ok, o.error) for o in outcomes] == [("slow", False, "ReadTimeout: timed out")]
    assert fast.requests == []
    (o,) = notify(cfg, store, sample_event(cfg, "candidate.promoted"), only="only-promotions")
    assert o.ok and len(fast.requests) == 1


def test_notify_never_raises_even_when_the_store_cannot_record(tmp_path, secret_env):
    cfg = load_config(write_cfg(tmp_path, [{"name": "ops", "url": down_url()}]), env={})
    unmigrated = Store(f"sqlite:///{tmp_path / 'empty.db'}")  # no dead-letter table
    (o,) = notify(cfg, unmigrated, sample_event(cfg, "retrain.failed"))
    assert not o.ok and o.dead_letter_id is None and o.attempts == 3


def test_the_secret_appears_in_no_log_line_or_output(tmp_path, hook_factory, secret_env, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    hook = hook_factory(500, 500, 500, 401)
    cfg_path = write_cfg(
        tmp_path,
        [
            {"name": "a", "url": hook.url},
            {"name": "b", "url": down_url()},
            {"name": "c", "url": hook.url, "format": "slack"},
        ],
    )
    cfg = load_config(cfg_path, env={})
    store = Store(cfg.store_url)
    store.migrate()
    outcomes = notify(cfg, store, sample_event(cfg, "retrain.failed"))
    assert [o.ok for o in outcomes] == [False, False, False]
    assert main(["--config", str(cfg_path), "alerts", "test"]) == 1
    assert main(["--config", str(cfg_path), "alerts", "retry"]) == 1
    assert main(["--config", str(cfg_path), "alerts", "list", "--all"]) == 0
    out = capsys.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "failed after 3 attempt(s): HTTP 500" in logged and "127.0.0.1" in logged
    for text in (logged, out.out, out.err):
        assert SECRET not in text
        assert "T0K3N" not in text  # URLs are shown by host: chat webhook URLs carry tokens


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
