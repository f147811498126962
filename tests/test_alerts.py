"""Alert webhooks against a real HTTP receiver on loopback: payloads in both formats, signatures
checked with the documented recipe, retries, dead letters and secrets kept out of logs."""

from __future__ import annotations

import json
import logging
import time

import pytest
from alert_peers import SECRET, down_url, hook_factory, sample_event, secret_env, setup, write_cfg  # noqa: F401 - fixtures (tests/ is on sys.path)

from driftloop.alerts import EVENT_TYPES, make_event, notify, resend
from driftloop.alerts import receiver as recipe
from driftloop.alerts.deliver import backoff
from driftloop.alerts.events import TITLES
from driftloop.alerts.signing import sign_headers, verify
from driftloop.app.cli import main
from driftloop.core.config import load_config
from driftloop.store import Store, deadletter


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
