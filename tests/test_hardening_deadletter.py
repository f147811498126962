"""A webhook URL's credentials (password, path token, query token) never reach the dead-letter table;
a re-send still reaches the full URL, taken from the config by the webhook's name."""

from __future__ import annotations

import json
import socket

from alert_peers import Hook, sample_event, setup
from sqlalchemy import text

from driftloop.alerts.notify import notify, resend
from driftloop.store.deadletter import redact_url

PASSWORD, PATH_TOKEN, QUERY_TOKEN = "hunter2pw", "XyZ0123456789abcdefSECRET", "q7token42x"


def test_dead_letters_keep_no_credentials_and_a_resend_uses_the_configured_url(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", "s3cret-for-signing")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://ops:{PASSWORD}@127.0.0.1:{port}/services/T01ABCDEF/{PATH_TOKEN}?token={QUERY_TOKEN}"
    cfg, store = setup(tmp_path, [{"name": "ops", "url": url}], retries=0)
    [o] = notify(cfg, store, sample_event(cfg, "retrain.failed"))
    assert not o.ok and o.dead_letter_id
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(text("SELECT * FROM alert_dead_letter")).mappings()]
    blob = json.dumps(rows, default=str)
    assert [s for s in (PASSWORD, PATH_TOKEN, QUERY_TOKEN, "T01ABCDEF") if s in blob] == []
    assert rows[0]["url"] == f"http://127.0.0.1:{port}/services/***/***" == redact_url(url)

    # The receiver comes up on that port: the re-send goes to the full URL of the config.
    hook = Hook()
    hook.server.server_close()
    import threading
    from http.server import ThreadingHTTPServer

    hook.server = ThreadingHTTPServer(("127.0.0.1", port), hook.server.RequestHandlerClass)
    paths: list[str] = []
    handler = hook.server.RequestHandlerClass
    original = handler.do_POST

    def do_post(self):
        paths.append(self.path)
        original(self)

    handler.do_POST = do_post
    threading.Thread(target=hook.server.serve_forever, daemon=True).start()
    try:
        [again] = resend(cfg, store)
    finally:
        hook.server.shutdown()
        hook.server.server_close()
    assert again.ok and paths == [f"/services/T01ABCDEF/{PATH_TOKEN}?token={QUERY_TOKEN}"]
