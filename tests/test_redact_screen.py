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


# The phone pre-check refuses a national candidate without a libphonenumber parse when no region of
# its country could hold it. `phone_ok` accepts a national candidate only when libphonenumber calls
# it valid and its digits are those of the number's national format (the trunk prefix perhaps
# written before it): the pre-check is sound if it never refuses such a candidate.
_REGIONS = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "AU", "CA", "IT", "RU", "CN", "AR")


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(st.text(alphabet="0123456789", min_size=1, max_size=6), min_size=1, max_size=5),
    st.sampled_from([" ", "-", "."]),
    st.sampled_from(_REGIONS),
)
def test_the_phone_pre_check_never_refuses_a_valid_number_as_written_nationally(groups, sep, region):
    import phonenumbers as pn

    from driftloop.ingest.redact import _may_be_valid

    s = sep.join(groups)
    prefix = pn.PhoneMetadata.metadata_for_region(region).national_prefix or ""
    if _may_be_valid("".join(groups), region, prefix):
        return
    try:
        number = pn.parse(s, region)
    except pn.NumberParseException:
        return
    if pn.is_valid_number(number):
        national = "".join(re.findall(r"\d+", pn.format_number(number, pn.PhoneNumberFormat.NATIONAL)))
        assert "".join(groups) not in (national, prefix + national), (s, region)


def test_the_phone_pre_check_lets_real_national_numbers_through():
    from driftloop.ingest.redact import _may_be_valid, phone_ok

    for s, region, prefix in [("02079460958", "GB", "0"), ("4155550100", "US", "1"), ("030901820", "DE", "0")]:
        assert _may_be_valid(s, region, prefix), s
    assert not _may_be_valid("0000000", "GB", "0")  # no UK number starts 000
    assert phone_ok("020 7946 0958") and phone_ok("(415) 555-0100") and not phone_ok("(1874-1936)")


def test_a_digit_run_inside_a_hex_id_is_no_card_but_a_card_in_text_is():
    """One random 32-hex trace id in a few hundred holds a Luhn-valid run of 13+ digits: taken for a
    card, it refused the span's event id (quarantined as PII). A card number is a word of its own."""
    span_id = "otel:7ef46b47f4c98fc08df8213050181610:62e7934dc514bb34"
    assert REDACTOR.flags(span_id) is None and REDACTOR.text(span_id) == span_id
    for s in ("card 4111111111111111", "card:4111 1111 1111 1111.", "card_4111111111111111", "(4111-1111-1111-1111)"):
        assert REDACTOR.flags(s) == "card", s


@settings(max_examples=3000, deadline=None)
@given(
    st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
)
def test_no_built_in_detector_flags_an_otlp_receiver_id(trace_id, span_id):
    """The receiver's ids skip the detectors' check (`rows.RECEIVER_ID`): sound only if none flags one."""
    from driftloop.ingest.rows import RECEIVER_ID

    event_id = f"otel:{trace_id}:{span_id}"
    assert RECEIVER_ID.fullmatch(event_id)
    # The one possible match: a span id of 16 digits that passes Luhn, taken for a card.
    assert REDACTOR.flags(event_id) in (None, "card" if span_id.isdigit() else None), event_id
    assert REDACTOR.flags(f"otel:{'4111111111111111'.rjust(32, '0')}:{span_id}") in (
        None,
        "card" if span_id.isdigit() else None,
    )


def test_otlp_receiver_ids_still_meet_a_configured_pattern():
    from driftloop.ingest.pipeline import RowParser
    from driftloop.ingest.rows import RowError

    row = {"event_id": "otel:" + "0" * 26 + "123456:" + "a" * 16, "ts": "2026-11-01T10:00:00Z", "prompt": "q"}
    assert RowParser(redactor=Redactor()).event(row, "t").event_id == row["event_id"]
    strict = RowParser(redactor=Redactor(patterns={"six": r"\d{6}"}))
    try:
        strict.event(row, "t")
        raise AssertionError("a configured pattern must still see receiver ids")
    except RowError as e:
        assert e.field == "event_id"
