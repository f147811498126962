"""Alert webhooks are judged by what their host resolves to, at send time, and sent to the address
that was checked: a name pointing at loopback or the metadata service is refused, and a second,
different DNS answer (rebinding) is never used.

DNS is `socket.getaddrinfo`, replaced for the names below; the only receiver is on loopback.
"""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from driftloop.alerts import resolve
from driftloop.alerts.deliver import post
from driftloop.alerts.resolve import ForbiddenHost, checked_addresses

REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture
def receiver():
    """(port, requests seen as (Host header, path)) of a loopback HTTP server answering 200."""
    seen: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append((self.headers.get("Host", ""), self.path))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1], seen
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def dns(monkeypatch):
    """names: name -> list of answers (one per lookup, the last repeats); every lookup is counted."""
    names: dict[str, list[str]] = {}
    lookups: list[str] = []

    def getaddrinfo(host, port, *a, **kw):
        if host not in names:
            return REAL_GETADDRINFO(host, port, *a, **kw)
        lookups.append(host)
        answers = names[host]
        ip = answers[min(len(lookups) - 1, len(answers) - 1)]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names, lookups


def send(url: str, **kw):
    return post(url, b"{}", "s3cret", "alert.test", "d1", retries=0, backoff_seconds=0, timeout_seconds=5, **kw)


def test_a_name_that_resolves_to_loopback_is_refused(receiver, dns):
    port, seen = receiver
    names, _ = dns
    names["hooks.example.test"] = ["127.0.0.1"]
    res = send(f"http://hooks.example.test:{port}/hook")
    assert not res.ok and res.attempts == 1
    assert "resolves to 127.0.0.1, a loopback address" in res.error
    assert seen == []  # nothing reached the local service


@pytest.mark.parametrize("answer", ["169.254.169.254", "fe80::1", "fd00:ec2::254", "::ffff:169.254.169.254"])
def test_a_name_that_resolves_to_a_metadata_address_is_refused_unless_allowed(dns, monkeypatch, answer):
    def getaddrinfo(host, port, *a, **kw):
        family = socket.AF_INET6 if ":" in answer else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (answer, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(ForbiddenHost, match="link-local or cloud metadata"):
        checked_addresses("innocent.example.test", 443, allow_link_local=False)
    assert checked_addresses("innocent.example.test", 443, allow_link_local=True) == [answer]


def test_one_forbidden_address_among_several_refuses_the_host(monkeypatch):
    def getaddrinfo(host, port, *a, **kw):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.10", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port)),
        ]

    monkeypatch.setattr(resolve.socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(ForbiddenHost, match="169.254.169.254"):
        checked_addresses("mixed.example.test", 443, allow_link_local=False)


def test_the_request_goes_to_the_checked_address_not_a_second_answer(receiver, dns):
    port, seen = receiver
    names, lookups = dns
    # The first answer is checked and used; a rebinding second answer would point elsewhere.
    names["rebind.localhost"] = ["127.0.0.1", "127.0.0.2"]
    res = send(f"http://rebind.localhost:{port}/hook")
    assert res.ok, res.error
    assert lookups == ["rebind.localhost"]  # resolved once, by the check
    assert seen == [(f"rebind.localhost:{port}", "/hook")]  # the name still in the Host header


def test_literal_loopback_and_localhost_stay_allowed(receiver):
    port, seen = receiver
    assert send(f"http://127.0.0.1:{port}/a").ok
    assert send(f"http://localhost:{port}/b").ok
    assert [p for _, p in seen] == ["/a", "/b"]
