"""PII and secrets in any field or key of an event never reach the store, the quarantine or a metric label.

Texts are redacted; ids, versions and segment keys, which are stored and
logged as given, are refused (the row is quarantined with the kind found,
never the value). Both file paths (columnar and row) and the HTTP parser
are fed the same rows.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from driftloop.core.types import MetricResult
from driftloop.ingest import ingest_files
from driftloop.ingest.pipeline import RowParser
from driftloop.ingest.redact import Redactor
from driftloop.ingest.rows import RowError

TS = "2026-11-01T10:00:00+00:00"
SECRETS = {
    "email": "bob.smith@example.com",
    "phone": "415-555-0100",
    "card": "4111111111111111",
    "ip": "10.20.30.40",
    "openai": "sk-proj-Abcdefghij0123456789KLMNOP",
    "github": "ghp_" + "A1b2C3d4E5" * 4,
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "iban": "DE89370400440532013000",
}


def rows_with_secret(name: str, s: str) -> list[dict]:
    """One row per place a secret can hide: every text, id, version, key and value."""
    base = {"ts": TS, "prompt": "question", "response": "answer", "rating": 4}
    return [
        {**base, "event_id": s},
        {**base, "event_id": f"{name}-v", "model_version": s},
        {**base, "event_id": f"{name}-p", "prompt": f"mine is {s} ok"},
        {**base, "event_id": f"{name}-r", "response": f"yours {s}"},
        {**base, "event_id": f"{name}-c", "correction": f"use {s}"},
        {**base, "event_id": f"{name}-sk", "segment": {s: "x"}},
        {**base, "event_id": f"{name}-sv", "segment": {"tier": s}},
        {**base, "event_id": f"{name}-mk", "metadata": {s: 1}},
        {**base, "event_id": f"{name}-mv", "metadata": {"note": [s]}},
        {**base, "event_id": f"{name}-xk", s: "extra"},
        {**base, "event_id": f"{name}-xv", "extra": s},
        {**base, "event_id": f"{name}-bad", "ts": s},  # quarantined: raw row and reason both redacted
    ]


ALL_ROWS = [r for name, s in SECRETS.items() for r in rows_with_secret(name, s)]


def leaks(blob: str) -> list[str]:
    return [name for name, s in SECRETS.items() if s in blob]


def dump(store) -> tuple[str, list[dict]]:
    with store.engine.connect() as conn:
        fb = [dict(r) for r in conn.execute(text("SELECT * FROM feedback")).mappings()]
        q = [dict(r) for r in conn.execute(text("SELECT * FROM quarantine")).mappings()]
    segments = [json.loads(r["segment"]) if isinstance(r["segment"], str) else r["segment"] for r in fb]
    return json.dumps([fb, q], default=str, ensure_ascii=False), segments


@pytest.mark.parametrize("fast", [True, False], ids=["columnar", "rows"])
def test_no_secret_in_any_field_reaches_the_store_the_quarantine_or_a_metric_label(store, tmp_path, monkeypatch, fast):
    if not fast:
        monkeypatch.setattr("driftloop.ingest.columnar.available", lambda: False)
    path = tmp_path / "feedback.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ALL_ROWS))
    report = ingest_files(store, [path])
    assert report.balanced and report.read == len(ALL_ROWS)
    blob, segments = dump(store)
    assert leaks(blob) == []
    labels = [MetricResult(name="thumbs_up_rate", value=1.0, source="quality", segment=seg).label() for seg in segments]
    assert leaks("\n".join(labels)) == []
    assert leaks(report.summary() + json.dumps(report.as_dict())) == []

    # Every id and version that held one was refused with the kind, never the value.
    def refused(field: str) -> int:
        return sum(n for k, n in report.reasons.items() if k.startswith(field + ":"))

    assert report.reasons["event_id: holds PII or a secret"] >= len(SECRETS) - 1  # the JWT is over 64 too
    assert refused("event_id") == refused("model_version") == len(SECRETS)
    assert report.reasons["segment: key holds PII or a secret"] >= 1


def test_the_http_parser_refuses_and_redacts_alike():
    parser = RowParser(redactor=Redactor())
    out = []
    for row in ALL_ROWS:
        try:
            e = parser.event(row, "http:/v1/feedback")
            out.append(e.model_dump_json())
            out.append(MetricResult(name="n", value=0.0, source="quality", segment=e.segment).label())
        except RowError as err:
            out.append(json.dumps(parser.quarantine(json.dumps(row), err, "http:/v1/feedback")))
            out.append(err.key)
    assert leaks("\n".join(out)) == []


@pytest.mark.parametrize(
    "value, ok",
    [
        ("order-42", True),
        ("123e4567-e89b-12d3-a456-426614174000", True),
        ("g15", True),
        ("a/b:c@d", True),
        ("has space", False),
        ("x" * 65, False),
        ("caf\u00e9", False),
        ("", False),
    ],
)
def test_event_ids_are_of_a_safe_bounded_form(value, ok):
    row = {"ts": TS, "prompt": "q", "event_id": value}
    parser = RowParser(redactor=Redactor())
    if ok:
        assert parser.event(row, "s").event_id == value
    else:
        with pytest.raises(RowError) as e:
            parser.event(row, "s")
        assert e.value.field == "event_id" and value not in str(e.value) or value == ""


def test_dotted_versions_are_versions_not_addresses():
    parser = RowParser(redactor=Redactor())
    for v in ("1.2.3", "2026.11.01", "v1.2.3", "gpt-4o-2024-08-06", "3"):
        assert parser.event({"ts": TS, "prompt": "q", "model_version": v}, "s").model_version == v
