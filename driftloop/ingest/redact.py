"""PII redaction applied to every text before it reaches the store, the logs or MLflow.

Built-in detectors find e-mail addresses, phone numbers (any country's in
international form, `+49 30 901820`; national forms of `phone_regions`; each
checked against libphonenumber's numbering plans by `phonenumbers`, so years,
ranges like `(1874-1936)` and order numbers are left alone), card-like numbers
(13-19 digits that pass the Luhn check), IPv4/IPv6 addresses and secrets:
API keys and tokens of well-known shapes (`key`: OpenAI/Anthropic `sk-...`,
Stripe `sk_live_...`, GitHub `ghp_...`/`github_pat_...`, AWS `AKIA...`, Slack
`xox?-...`, Google `AIza...`), JSON Web Tokens (`jwt`: `eyJ...` in three dotted
parts) and IBANs (`iban`, mod-97 checked). The config adds named patterns of
its own. Each match becomes a placeholder such as `[EMAIL]`, and the redactor
counts what it replaced, by kind. `flags(s)` says which kind a text would lose
without counting it: ids and versions, which must not be altered, are
refused instead (see `rows.parse_row`).

    >>> r = Redactor(patterns={"employee": r"EMP-\\d{6}"})
    >>> r.text("mail bob@example.com or call +44 20 7946 0958, ref EMP-123456")
    'mail [EMAIL] or call [PHONE], ref [EMPLOYEE]'
    >>> dict(r.counts)
    {'employee': 1, 'email': 1, 'phone': 1}
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from functools import cache, lru_cache
from typing import Any

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_H = r"[0-9A-Fa-f]{1,4}"
BUILTIN: dict[str, str] = {
    # Secrets first: a key or an IBAN holds digit runs the phone and card detectors would
    # take apart. Every part is bounded, so the scan stays linear on long texts.
    "key": (
        r"(?<![A-Za-z0-9_-])(?:sk-(?:[a-z]{2,8}-)?[A-Za-z0-9_-]{20,256}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,256}"
        r"|gh[pousr]_[A-Za-z0-9]{30,256}|github_pat_[A-Za-z0-9_]{22,256}|(?:AKIA|ASIA)[A-Z0-9]{16}"
        r"|xox[abprse]-[A-Za-z0-9-]{10,256}|AIza[A-Za-z0-9_-]{35})(?![A-Za-z0-9_-])"
    ),
    "jwt": r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,8192}\.[A-Za-z0-9_-]{4,65536}\.[A-Za-z0-9_-]{0,8192}",
    # Two letters, two check digits, 11-30 letters or digits (grouped by single spaces); mod-97 checked below.
    "iban": r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])",
    # Bounded parts (RFC 5321: 64-character local part, 63-character labels) and a
    # start only where a word starts: linear time even on a 1 MB run of letters.
    # Domain labels may be internationalised (Unicode letters and digits).
    "email": r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){0,8}\.[^\W\d_]{2,24}(?![\w-])",
    # 13-19 digits, optionally grouped by single spaces or dashes; Luhn-checked below. Not inside a
    # word: a digit run within a hex id (trace and span ids) is no card, and one in ten passes Luhn.
    "card": r"(?<![A-Za-z0-9-])\d(?:[ -]?\d){12,18}(?![A-Za-z0-9-])",
    "ip": (
        rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\d|\.\d)"
        rf"|(?<![:\w])(?:{_H}:){{7}}{_H}(?![:\w])"
        rf"|(?<![:\w])(?:{_H}:){{1,6}}:(?:{_H}(?::{_H}){{0,5}})?(?![:\w])"
    ),
    # Candidates only: digit groups that may be a phone number, "+49 30 901820", "(030) 901820",
    # "020 7946 0958", "555-0100"; `phone_ok` (libphonenumber's numbering plans) decides. A
    # candidate starts with '+' or '(', or has a separator between two digits (see FLAG_SCREEN_REGEX).
    # ISO dates (2026-11-01) and times are not phone numbers.
    "phone": (
        r"(?<![\w+:.-])(?!\d{4}-\d\d-\d\d(?!\d))"
        r"(?:\+\d{1,3}[ .-]?(?:\(\d{1,5}\)[ .-]?)?\d{1,14}(?:[ .-]\d{1,8}){0,6}"
        r"|\(\d{1,5}\)[ .-]?\d{1,8}(?:[ .-]\d{1,8}){0,6}"
        r"|\d{1,8}(?:[ .-]\d{1,8}){1,6})(?![\w])"
    ),
}
# National forms of these countries' numbers are recognised (any country's with a +country code).
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "AU")
ORDER = ("key", "jwt", "iban", "email", "card", "ip", "phone")  # alternation order of the built-ins
# A text without any of these characters cannot hold a built-in match other than a
# secret: most texts are skipped after one scan.
_SCREEN = re.compile(r"[@\d:]")
# What every `key` and `jwt` match starts with (an IBAN holds digits): a text holding
# one of these is redacted with a plain scan (see `Redactor.text`).
SECRET_HINTS = ("sk-", "sk_", "rk_", "gh", "AKIA", "ASIA", "xox", "AIza", "eyJ")
_HINT = re.compile("|".join(re.escape(h) for h in SECRET_HINTS))
SECRET_HINT_REGEX = _HINT.pattern  # the same test for pyarrow (RE2) in the columnar path
# A value can hold a built-in match only if it holds one of these: every e-mail an '@', every
# IPv6 address a ':', every phone number, IPv4 address and grouped card number a digit, a
# separator and a digit, every ungrouped card 13 digits in a row, every IBAN two capitals and two
# digits, every key or token one of SECRET_HINTS. Ids and versions (digits, but rarely these)
# are screened with it before the redactor looks at them one by one (RE2 syntax, for pyarrow).
FLAG_SCREEN_REGEX = r"[@:]|\d[ .-]\d|\+\d|\(\d|\d{13}|[A-Z]{2}\d{2}|" + SECRET_HINT_REGEX
BEFORE_TRIGGER = 64  # characters: an e-mail's local part may precede its '@' (or a digit in it)


def might_match(s: str) -> bool:
    """True when `s` holds an '@', a ':', a digit or a secret's start, without which no built-in matches.

    Same answer as `_SCREEN.search` or `has_secret_hint`, about ten times
    faster on ASCII text: each `in` is a C-speed scan (only non-ASCII text has
    other digits).
    """
    if not s.isascii():
        return _SCREEN.search(s) is not None or _HINT.search(s) is not None
    return (
        "@" in s
        or ":" in s
        or "0" in s
        or "1" in s
        or "2" in s
        or "3" in s
        or "4" in s
        or "5" in s
        or "6" in s
        or "7" in s
        or "8" in s
        or "9" in s
        or has_secret_hint(s)
    )


def has_secret_hint(s: str) -> bool:
    """True when `s` holds the start of a `key` or `jwt` match (see SECRET_HINTS)."""
    return (
        "sk-" in s
        or "sk_" in s
        or "rk_" in s
        or "gh" in s
        or "AKIA" in s
        or "ASIA" in s
        or "xox" in s
        or "AIza" in s
        or "eyJ" in s
    )


def _never(_s: str) -> bool:
    return False


def iban_ok(s: str) -> bool:
    """True when `s` (spaces ignored) passes the ISO 13616 mod-97 check of IBANs."""
    t = s.replace(" ", "")
    if not 15 <= len(t) <= 34:
        return False
    n = "".join(str(int(c, 36)) for c in t[4:] + t[:4])
    return int(n) % 97 == 1


_NANP_LOCAL = re.compile(r"[2-9]\d\d[ .-]\d{4}")  # a North American number without its area code: 555-0100


@cache
def _plan(region: str) -> tuple[str, bool, frozenset[int]]:
    """A region's trunk prefix, whether its national format writes it, and its national number lengths."""
    import phonenumbers as pn

    meta = pn.PhoneMetadata.metadata_for_region(region)
    if meta is None:
        return "", False, frozenset()
    prefix = meta.national_prefix or ""
    example = pn.example_number(region)
    national = re.sub(r"\D", "", pn.format_number(example, pn.PhoneNumberFormat.NATIONAL)) if example else ""
    lengths = {*meta.general_desc.possible_length, *(meta.general_desc.possible_length_local_only or ())}
    return prefix, bool(prefix) and national.startswith(prefix), frozenset(lengths)


@cache
def _valid_shape(region: str) -> re.Pattern[str] | None:
    """The national numbers any region of `region`'s country code could hold (their general patterns).

    A number libphonenumber calls valid matches one of these, so a candidate
    matching none is refused without a parse (the costly part).
    """
    import phonenumbers as pn

    meta = pn.PhoneMetadata.metadata_for_region(region)
    if meta is None:
        return None
    patterns = []
    for other in pn.region_codes_for_country_code(meta.country_code):
        m = pn.PhoneMetadata.metadata_for_region(other)
        if m is None or m.general_desc is None or not m.general_desc.national_number_pattern:
            return None  # unknown shape: parse as before
        patterns.append(f"(?:{m.general_desc.national_number_pattern})")
    return re.compile("|".join(patterns)) if patterns else None


def _may_be_valid(written: str, region: str, prefix: str) -> bool:
    """False when no national number `written` can stand for (itself, or after one or two trunk prefixes) fits `region`'s country."""
    shape = _valid_shape(region)
    if shape is None:
        return True
    for _ in range(3):
        if shape.fullmatch(written):
            return True
        if not prefix or not written.startswith(prefix):
            return False
        written = written[len(prefix) :]
    return False


@lru_cache(maxsize=65536)
def phone_ok(s: str, regions: tuple[str, ...] = PHONE_REGIONS) -> bool:
    """True when `s` is a phone number: a valid one of any country after '+', or one of `regions` as written there.

    A number without '+' counts only in a region whose numbering plan makes it
    valid and whose national form it is written in (the trunk prefix
    included: "020 7946 0958" in GB, not "2019-2021" in DE); a North American
    local number (555-0100) counts where US or CA is a region.
    """
    import phonenumbers as pn

    groups = re.findall(r"\d+", s)
    if not 7 <= sum(map(len, groups)) <= 15:  # E.164: at most 15 digits
        return False
    if s.startswith("+"):
        # A +country code is intent enough: a length the country's plan allows will do (numbers
        # from unassigned or fictional ranges, +44 7700 900123, are still someone's number).
        try:
            return pn.is_possible_number(pn.parse(s, None))
        except pn.NumberParseException:
            return False
    written = "".join(groups)
    for region in regions:
        prefix, writes_prefix, lengths = _plan(region)
        nsn = len(written) - len(prefix) if prefix and written.startswith(prefix) else len(written)
        if (writes_prefix and not written.startswith(prefix)) or nsn not in lengths:
            continue  # cannot be this region's number as written there: no parse (the costly part)
        if not _may_be_valid(written, region, prefix) and not (region in ("US", "CA") and _NANP_LOCAL.fullmatch(s)):
            continue
        try:
            n = pn.parse(s, region)
        except pn.NumberParseException:
            continue
        if pn.is_valid_number(n):
            # Written as the region writes it: the same digit groups as its national format
            # (optionally after the trunk prefix, 1-415-555-0100), not merely the same digits.
            national = re.findall(r"\d+", pn.format_number(n, pn.PhoneNumberFormat.NATIONAL))
            prefix = pn.PhoneMetadata.metadata_for_region(region).national_prefix or ""
            # Or the same digits, the trunk prefix written: 0151 23456789 for 01512 3456789.
            if groups in (national, [prefix, *national]) or (
                prefix
                and 1 < len(groups) <= len(national)
                and len(groups[0]) > len(prefix)
                and groups[0].startswith(prefix)
                and "".join(groups) == "".join(national)
            ):
                return True
        elif region in ("US", "CA") and _NANP_LOCAL.fullmatch(s):
            return pn.is_possible_number_with_reason(n) == pn.ValidationResult.IS_POSSIBLE_LOCAL_ONLY
    return False


def luhn_ok(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum used by payment cards."""
    total, odd = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if odd:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        odd = not odd
    return total % 10 == 0


class Redactor:
    """Replaces PII in texts with `[KIND]` placeholders and counts the replacements by kind.

    `builtin` picks detectors from BUILTIN (all by default); `patterns` adds
    named regexes. A disabled redactor (`enabled=False`) returns texts as is.
    """

    def __init__(
        self,
        builtin: Iterable[str] = tuple(BUILTIN),
        patterns: dict[str, str] | None = None,
        enabled: bool = True,
        phone_regions: Iterable[str] = PHONE_REGIONS,
    ) -> None:
        self.enabled = enabled
        self.counts: Counter[str] = Counter()
        self.phone_regions = tuple(r.upper() for r in phone_regions)
        # Rebuilds it elsewhere: Redactor(*spec).
        self.spec = (tuple(builtin), dict(patterns or {}), enabled, self.phone_regions)
        # User patterns run first (they may be more specific); the built-ins then run as
        # one alternation in one pass, cards before phones (a card number also looks
        # like a phone number).
        self._user = [(k, re.compile(v)) for k, v in (patterns or {}).items()]
        chosen = [k for k in ORDER if k in set(builtin)]
        self._builtin = re.compile("|".join(f"(?P<{k}>{BUILTIN[k]})" for k in chosen)) if chosen else None
        self._user_subs = [(rx, self._replacer(k)) for k, rx in self._user]
        self._builtin_sub = self._replacer(None)
        # A cheap test that `text(s)` might change s: a callable returning a false value
        # for texts no built-in can match, or None when user patterns see every text.
        self.screen = None if self._user else (might_match if self._builtin is not None else _never)

    def text(self, s: str) -> str:
        """`s` with every PII match replaced; counts are added to `self.counts`."""
        if not self.enabled or not s:
            return s
        for rx, sub in self._user_subs:
            s = rx.sub(sub, s)
        if self._builtin is not None and might_match(s):
            # A secret need not hold the characters `_sub_builtin` jumps to: plain scan.
            s = self._builtin.sub(self._builtin_sub, s) if has_secret_hint(s) else self._sub_builtin(s)
        return s

    def flags(self, s: str) -> str | None:
        """The first kind of PII or secret that `text(s)` would replace, or None; counts nothing.

        For values that must stay exactly as given (event ids, model versions,
        segment keys): a flagged one is refused, not altered.
        """
        if not self.enabled or not s:
            return None
        seen: Counter[str] = Counter()
        for k, rx in self._user:
            if rx.sub(self._replacer(k, seen), s) != s:
                return k
        if self._builtin is not None and might_match(s) and self._builtin.search(s) is not None:
            self._builtin.sub(self._replacer(None, seen), s)
            if seen:
                return next(iter(seen))
        return None

    def _sub_builtin(self, s: str) -> str:
        """`self._builtin.sub(self._builtin_sub, s)`, searching only near the characters a match needs.

        Every built-in match holds an '@', a ':' or a digit, at most
        BEFORE_TRIGGER characters after its start (an e-mail's local part;
        without an '@' in the text, at most 4: an IPv6 group or a phone's '+'
        or '('), and no space in between. So the scan for the next match may
        start there instead of at every position: same matches, same order
        (lookbehinds still see the whole text), several times faster on long
        texts with a number or an address near their end.
        """
        rx, sub, find = self._builtin, self._builtin_sub, _SCREEN.search
        back = BEFORE_TRIGGER if "@" in s else 4
        out, last = [], 0
        while True:
            t = find(s, last)
            if t is None:
                break
            at = t.start()
            # No match has a space between its start and its first '@', ':' or digit.
            m = rx.search(s, max(last, at - back, s.rfind(" ", last, at) + 1))
            if m is None:
                break
            out.append(s[last : m.start()])
            out.append(sub(m))
            last = m.end()
        if not out:
            return s
        out.append(s[last:])
        return "".join(out)

    def _replacer(self, fixed: str | None, counts: Counter[str] | None = None):
        def sub(m: re.Match[str]) -> str:
            kind = fixed or m.lastgroup or ""
            if kind == "card" and not luhn_ok(re.sub(r"\D", "", m.group(0))):
                return m.group(0)
            if kind == "phone" and not phone_ok(m.group(0), self.phone_regions):
                return m.group(0)  # a year, a range, a count, a version, an order number
            if kind == "iban" and not iban_ok(m.group(0)):
                return m.group(0)
            (self.counts if counts is None else counts)[kind] += 1
            return f"[{kind.upper()}]"

        return sub

    def fork(self) -> Redactor:
        """A redactor with the same compiled patterns and fresh counts (one per request or thread)."""
        other = object.__new__(Redactor)
        other.__dict__.update(self.__dict__)
        other.counts = Counter()
        other._user_subs = [(rx, other._replacer(k)) for k, rx in self._user]
        other._builtin_sub = other._replacer(None)
        return other

    @classmethod
    def from_config(cls, cfg: Any) -> Redactor:
        """A redactor for a `RedactionConfig`."""
        return cls(cfg.builtin, cfg.patterns, cfg.enabled, getattr(cfg, "phone_regions", PHONE_REGIONS))

    def value(self, v: Any) -> Any:
        """Redact every string inside a JSON-like value (keys included)."""
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            return {self.text(k) if isinstance(k, str) else k: self.value(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self.value(x) for x in v]
        return v
