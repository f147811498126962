"""The cheap screen before the redactor judges ids and versions one by one: it may let through
values that are clean, never one the redactor would flag (else PII would reach the store)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from driftloop.ingest.redact import FLAG_SCREEN_REGEX, Redactor

SCREEN = re.compile(FLAG_SCREEN_REGEX)
REDACTOR = Redactor()
KNOWN = [
    "a@b.co",
    "4111 1111 1111 1111",
    "4111111111111111",
    "10.0.0.1",
    "fe80::1",
    "DE89370400440532013000",
    "sk-abcdefghijklmnopqrstuvwx",
    "ghp_" + "a" * 36,
    "eyJhbGciOi.eyJzdWIi.sig",
    "AKIAABCDEFGHIJKLMNOP",
    "555-0100",
    "(415) 555-0100",
    "020 7946 0958",
    "GB82 WEST 1234 5698 7654 32",
]


def test_every_known_secret_or_pii_passes_the_screen():
    for s in KNOWN:
        assert REDACTOR.flags(s), s  # the redactor flags it ...
        assert SCREEN.search(s), s  # ... so the screen must let it through


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="0123456789 .-:@()+_abcxyzDEGBAKIhpsk", min_size=1, max_size=40))
def test_the_screen_never_hides_what_the_redactor_flags(s):
    if REDACTOR.flags(s):
        assert SCREEN.search(s), s


def test_plain_ids_and_versions_skip_the_redactor():
    for s in ("e123", "order-42", "v2", "model_7", "ckpt-20261101"):
        assert not SCREEN.search(s)
