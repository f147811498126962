"""Benchmark: the PII redactor on a labelled corpus, recall per kind and false positives on hard negatives.

The corpus is written out below (no download, nothing random): phone numbers of
many countries in international and national forms, payment cards (the
networks' published test numbers, grouped and not), e-mail addresses, IPv4 and
IPv6 addresses and API keys of the shapes the redactor knows, each inside a
sentence; and hard negatives that look like them: years, date ranges, ISO
dates, times, versions, order and invoice numbers, amounts, postcodes, ISBNs,
sizes. A positive counts as found when its kind's placeholder replaced it
(another kind's placeholder is a miss); a negative is a false positive when the
redactor changed anything in it. Goals: recall >= 0.98 for every kind, false
positives <= 1% of the negatives.

    .venv/bin/python benchmarks/redaction_corpus.py          # the table
    .venv/bin/python benchmarks/redaction_corpus.py --json   # the same figures as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field

from driftloop.ingest.redact import Redactor

RECALL_GOAL = 0.98
FP_GOAL = 0.01

PHONES = [
    # International forms, many countries.
    "+49 30 901820",
    "+49 30 9018200",
    "+49 89 1234567",
    "+49 151 23456789",
    "+49-30-901820",
    "+44 20 7946 0958",
    "+44 (0)20 7946 0958",
    "+44 7700 900123",
    "+44 161 496 0000",
    "+33 1 42 68 53 00",
    "+33 6 12 34 56 78",
    "+1 415 555 0134",
    "+1 (212) 555-0199",
    "+1-646-555-0142",
    "+91 98765 43210",
    "+91 22 2345 6789",
    "+81 3-1234-5678",
    "+81 90-1234-5678",
    "+55 11 91234-5678",
    "+55 21 2345-6789",
    "+61 2 9876 5432",
    "+61 412 345 678",
    "+34 912 345 678",
    "+34 612 34 56 78",
    "+39 06 1234 5678",
    "+39 312 345 6789",
    "+31 6 12345678",
    "+31 20 123 4567",
    "+41 44 668 18 00",
    "+43 1 234567",
    "+46 8 123 456 78",
    "+47 22 12 34 56",
    "+45 32 12 34 56",
    "+48 22 123 45 67",
    "+52 55 1234 5678",
    "+27 21 123 4567",
    "+65 6123 4567",
    "+82 2-312-3456",
    "+86 138 0013 8000",
    "+86 10 1234 5678",
    "+353 1 234 5678",
    "+351 21 234 5678",
    "+30 21 0123 4567",
    "+90 212 123 45 67",
    "+971 4 123 4567",
    "+64 9 123 4567",
    "+4930901820",
    "+442079460958",
    # National forms of the default regions (US, GB, DE, FR, IN, BR, JP, AU).
    "(415) 555-0134",
    "415-555-0134",
    "415.555.0134",
    "1-800-555-0199",
    "555-0100",
    "020 7946 0958",
    "0161 496 0000",
    "07700 900123",
    "030 901820",
    "(030) 901820",
    "089 1234567",
    "0151 23456789",
    "01 42 68 53 00",
    "06 12 34 56 78",
    "(11) 91234-5678",
    "03-1234-5678",
    "090-1234-5678",
    "(02) 9876 5432",
    "0412 345 678",
]
CARDS = [
    "4111111111111111",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "4012888888881881",
    "4012 8888 8888 1881",
    "5555555555554444",
    "5555 5555 5555 4444",
    "5105105105105100",
    "5105-1051-0510-5100",
    "2223003122003222",
    "378282246310005",
    "3782 822463 10005",
    "371449635398431",
    "6011111111111117",
    "6011 1111 1111 1117",
    "6011000990139424",
    "3530111333300000",
    "3566002020360505",
    "30569309025904",
    "38520000023237",
    "6200000000000005",
    "4000056655665556",
    "4242424242424242",
    "4242 4242 4242 4242",
    "5200828282828210",
]
EMAILS = [
    "bob@example.com",
    "alice.smith@example.co.uk",
    "a.b-c_d+tag@sub.example.org",
    "first.last@mail.example.de",
    "x@y.io",
    "support@driftloop.dev",
    "user123@example.net",
    "jean-luc.picard@starfleet.example",
    "o'reilly@example.com",
    "UPPER.CASE@EXAMPLE.COM",
    "name+filter@gmail.com",
    "dev.ops@corp.example.travel",
    "me@localhost.localdomain",
    "hello@例え.jp.example.com",
    "n.m@a-b.example.fr",
    "info@shop.example.com.br",
    "sales@company.example.in",
    "team_lead@example.museum",
    "ana.lima@example.pt",
    "k@example.ai",
    "test.email.with+symbol@example.com",
    "id-42@example.app",
    "q@q.qq.example.cn",
    "a1b2c3@example.xyz",
    "noreply@notifications.example.com",
]
IPS = [
    "10.0.0.1",
    "192.168.1.254",
    "172.16.31.7",
    "8.8.8.8",
    "203.0.113.42",
    "198.51.100.7",
    "255.255.255.0",
    "127.0.0.1",
    "100.64.12.9",
    "1.1.1.1",
    "192.0.2.146",
    "10.20.30.40",
    "169.254.10.20",
    "2001:db8::1",
    "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    "fe80::1ff:fe23:4567:890a",
    "2001:db8:0:0:1::1",
    "fd00::abcd",
    "2606:4700:4700::1111",
    "2001:db8:3333:4444:5555:6666:7777:8888",
    "fe80::1",
    "2001:db8::ff00:42:8329",
    "64:ff9b::192",
    "2a00:1450:4001:82a::200e",
    "2001:db8:a0b:12f0::1",
]
KEYS = [
    "sk-proj-Abcdefghij0123456789KLMNOP",
    "sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345",
    "sk-Abcdefghijklmnopqrstuvwx0123456789ABCDEFGHIJ",
    "sk_live_51Habcdefghijklmnopqrst",
    "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
    "rk_live_abcdefghijklmnop1234",
    "ghp_A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5",
    "gho_16C7e42F292c6912E7710c838347Ae178B4a",
    "ghs_abcdefghijklmnopqrstuvwxyz0123456789",
    "github_pat_11ABCDEFG0abcdefghijklmnopqrstuvwxyz",
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAIOSFODNN7EXAMPLE",
    "AKIAABCDEFGHIJKLMNOP",
    "xoxb-123456789012-123456789012-abcdefghijklmnopqrstuvwx",
    "xoxp-1234567890-abcdefghij",
    "xoxa-2-abcdefghijklmnop",
    "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
    "sk-abcdefghijklmnopqrstuvwx",
    "ghu_abcdefghijklmnopqrstuvwxyz0123456789",
    "ghr_abcdefghijklmnopqrstuvwxyz0123456789",
    "sk-svcacct-Abcdefghijklmnopqrstuvwxyz012345",
    "xoxe-1-abcdefghijklmnopqrstu",
    "sk_live_abcdefghijklmnopqrstuvwxyz01",
    "rk_test_abcdefghijklmnop1234",
]
NEGATIVES = [
    # Years, date ranges, ISO dates and times.
    "He lived (1874-1936) in Vienna.",
    "the war of 1914-1918",
    "between 1999-2001 sales grew",
    "seasons 2019-2021 were remote",
    "in 2024 2025 2026 we plan",
    "copyright 2003-2026",
    "FY 2023/2024 report",
    "the 1990s and 2000s",
    "born in 1987",
    "ISO date 2026-11-01",
    "on 2026-11-01 at 10:30",
    "from 2026-01-01 to 2026-12-31",
    "timestamp 2026-11-01T10:00:00Z",
    "meet at 09:15-10:45",
    "open 8:00-17:00 daily",
    "dated 01.02.2026",
    "dated 12/31/2025",
    "week 2026-W45",
    "Q3 2026",
    "at 23:59:59",
    # Versions.
    "upgrade to v1.2.3",
    "python 3.11.7",
    "pydantic 2.14.1",
    "release 2026.11.01",
    "version 10.4.2.1",
    "v2.3.4567",
    "build 4.18.0-553.el8",
    "node 18.19.0",
    "semver 0.66.0b2",
    "kernel 6.8.0-45-generic",
    "chrome 131.0.6778.85",
    "schema version 3",
    "api v1",
    "firmware 1.0.12.345",
    "ubuntu 24.04",
    # Order, invoice, ticket and tracking numbers.
    "order 1234-5678-90",
    "order #12345678",
    "ORD-2024-001234",
    "invoice INV-2026-00042",
    "ticket JIRA-4821",
    "case 00123456",
    "ref 12 345 678",
    "PO 4500012345",
    "shipment 1Z999AA10123456784",
    "RMA 2026-0042-17",
    "booking code 7H3K9Q",
    "SKU 100-200-300",
    "batch 12-34-56",
    "item 987654",
    "account no. 000123",
    "customer 42",
    "request id 7f3c2a",
    "order 555 0100 22",
    "transaction 2026 1101 0001",
    # Amounts, quantities, measurements.
    "it cost $1,234,567.89",
    "EUR 1.234.567,89",
    "about 1 234 567 users",
    "12,345 rows",
    "3.14159 is pi",
    "resolution 1920x1080",
    "size 1024 MB",
    "weight 72.5 kg",
    "speed 299 792 458 m/s",
    "score 98.6%",
    "between 10-20 items",
    "pages 123-145",
    "chapter 3.2.1",
    "section 12.4.7",
    "rows 100000-200000",
    "latency p99 123.4 ms",
    "temperature -12.5 C",
    "room 101",
    "floor 3, desk 42",
    "lat 52.5200, lon 13.4050",
    # Postcodes, ISBNs, codes.
    "ZIP 94103",
    "postcode SW1A 1AA",
    "PLZ 10115 Berlin",
    "ISBN 978-3-16-148410-0",
    "ISBN 0-306-40615-2",
    "ISSN 2049-3630",
    "EAN 4006381333931",
    "HS code 8471.30.01",
    "IATA LH 400",
    "flight BA 2490",
    "gate B 42",
    "model GPT-4o-2024-08-06",
    "checkpoint ckpt-20261101",
    "commit 3e3cb5a",
    "port 8080",
    "localhost:8080",
    "http://example.com:8000/path",
    "MAC 00-1A-2B-3C-4D-5E",
    "UUID 123e4567-e89b-12d3-a456-426614174000",
    "hash 9f86d081884c7d65",
    # Trace and span ids: hex, whose digit runs may pass the Luhn check (here 13 and 15 digits).
    "trace_id 7ef46b47f4c98fc08df8213050181610",
    "span 62e7934dc514bb340998094460379c4c",
    # Plain text with numbers.
    "call me in 5 minutes",
    "press 1 then 2",
    "top 10 of 2025",
    "3 items at 4.99 each",
    "the 24-7 hotline is closed",
    "rated 4.5 out of 5",
    "1 2 3 4 5",
    "0 1 1 2 3 5 8 13",
    "page 7 of 12",
    "steps 10, 20, 30",
    "a 3-4 day delay",
    "an 80-20 split",
    "the 9-5 job",
    "route 66",
    "aged 18-25",
    "from 100 to 200 to 300",
    "sizes 36 38 40 42",
    "grades 1.0 to 5.0",
    "a 1:1 meeting",
    "ratio 16:9",
    "score 3-1",
    "halftime 1:0",
    "see 1.2.3 and 4.5.6",
    "versions 1.2 and 1.3",
    "bus 42 at 7 15",
    "codes 12 34 and 56 78",
    "years 1990 1991 1992",
    "in the 20th century",
]

POSITIVES = {"phone": PHONES, "card": CARDS, "email": EMAILS, "ip": IPS, "key": KEYS}
TEMPLATES = ("please use {} for this", "{}", "mine is {}.", "(contact: {})")


@dataclass
class KindResult:
    kind: str
    n: int
    found: int
    recall: float
    missed: list[str] = field(default_factory=list)


@dataclass
class CorpusReport:
    kinds: list[KindResult]
    negatives: int
    false_positives: int
    fp_rate: float
    fp_by_kind: dict[str, int]
    fp_examples: list[str]
    strings: int

    @property
    def ok(self) -> bool:
        return all(k.recall >= RECALL_GOAL for k in self.kinds) and self.fp_rate <= FP_GOAL


def run(redactor: Redactor | None = None) -> CorpusReport:
    """Redact every labelled string of the corpus and measure recall per kind and the false-positive rate."""
    redactor = redactor or Redactor()
    kinds = []
    for kind, values in POSITIVES.items():
        found, missed = 0, []
        for i, v in enumerate(values):
            text = TEMPLATES[i % len(TEMPLATES)].format(v)
            out = redactor.fork().text(text)
            if f"[{kind.upper()}]" in out and v not in out:
                found += 1
            else:
                missed.append(f"{v!r} -> {out!r}")
        kinds.append(KindResult(kind, len(values), found, found / len(values), missed))
    fp_kinds: Counter[str] = Counter()
    examples = []
    for s in NEGATIVES:
        r = redactor.fork()
        out = r.text(s)
        if out != s:
            fp_kinds.update(r.counts)
            examples.append(f"{s!r} -> {out!r}")
    n_pos = sum(len(v) for v in POSITIVES.values())
    return CorpusReport(
        kinds,
        len(NEGATIVES),
        len(examples),
        len(examples) / len(NEGATIVES),
        dict(fp_kinds),
        examples,
        n_pos + len(NEGATIVES),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    rep = run()
    if args.json:
        print(json.dumps({**asdict(rep), "ok": rep.ok}, indent=2, ensure_ascii=False))
        return 0 if rep.ok else 1
    print(f"redaction corpus: {rep.strings} labelled strings ({rep.negatives} hard negatives)")
    print(f"{'kind':<8}{'n':>5}{'found':>7}{'recall':>8}   false positives on negatives")
    for k in rep.kinds:
        fp = rep.fp_by_kind.get(k.kind, 0)
        print(f"{k.kind:<8}{k.n:>5}{k.found:>7}{k.recall:>8.3f}   {fp}/{rep.negatives} = {fp / rep.negatives:.3f}")
        for m in k.missed:
            print(f"    missed {m}")
    print(f"all kinds: false positives {rep.false_positives}/{rep.negatives} = {rep.fp_rate:.3f}")
    for e in rep.fp_examples:
        print(f"    changed {e}")
    print(
        f"goals: recall >= {RECALL_GOAL} per kind, false positives <= {FP_GOAL:.0%}: {'met' if rep.ok else 'NOT met'}"
    )
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
