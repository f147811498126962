"""What every source shares: the row parser (mapping, validation, redaction) and the reports.

A `RowParser` turns one raw row into a `FeedbackEvent` or a quarantine row
whose raw payload and reason are redacted too, so PII reaches the store
neither through accepted events nor through quarantined ones. Reports keep
the accounting identity `read == accepted + duplicates + quarantined` and the
redaction counts by kind.

    >>> parser = RowParser(FieldMapping(rating_scale="thumbs"), Redactor())
    >>> parser.event({"ts": "2026-11-01T00:00:00Z", "prompt": "mail a@b.io", "rating": "up"}, "x").prompt
    'mail [EMAIL]'
    >>> dict(parser.redactor.counts)
    {'email': 1}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from driftloop.core.config import FieldMapping
from driftloop.core.types import FeedbackEvent
from driftloop.ingest.mapping import map_row
from driftloop.ingest.redact import Redactor
from driftloop.ingest.rows import RowError, parse_row
from driftloop.store.batch import QuarantineRow
from driftloop.store.quarantine import quarantine_id

RAW_KEEP_CHARS = 64 * 1024  # how much of a quarantined row's raw payload is kept
Progress = Callable[[int, int], None]


class RowParser:
    """Mapping + `parse_row` + redaction for one source; counts redactions in `redactor.counts`."""

    def __init__(
        self,
        mapping: FieldMapping | None = None,
        redactor: Redactor | None = None,
        text_cells: bool = False,
        now: datetime | None = None,
        typed: bool = False,
        id_namespace: str = "",
    ) -> None:
        self.mapping = mapping or FieldMapping()
        self.typed = typed  # values from Parquet or SQL: dates, decimals, bytes
        self.redactor = redactor if redactor is not None else Redactor()
        self.text_cells = text_cells
        self.now = now
        self.id_namespace = id_namespace  # enters the ids of events without one: see rows.event_id_for

    def fork(self) -> RowParser:
        """The same parser with a redactor of its own (fresh counts): one per thread, block or request."""
        return RowParser(self.mapping, self.redactor.fork(), self.text_cells, self.now, self.typed, self.id_namespace)

    def event(self, obj: Any, source: str) -> FeedbackEvent:
        """The event for one decoded row; raises RowError for any fault.

        A fault in a field the mapping renames names the user's field too
        (`created_at (-> ts): no timezone`), in reports and quarantine rows.
        """
        try:
            return parse_row(map_row(obj, self.mapping, self.text_cells, self.typed), source, **self._settings())
        except RowError as e:
            name = self.mapping.fields.get(e.field)
            if name is None or name == e.field or e.problem.startswith("mapped field"):
                raise
            raise RowError(f"{name} (-> {e.field})", e.problem, e.detail) from None

    def _settings(self) -> dict[str, Any]:
        """`parse_row`'s keyword settings for this parser."""
        m = self.mapping
        return {
            "now": self.now,
            "rating_scale": m.rating_scale,
            "redactor": self.redactor,
            "id_namespace": self.id_namespace,
            "max_segment_keys": m.segment_max_keys,
            "max_segment_value": m.segment_value_max_chars,
            "timezone": m.timezone,
        }

    def event_function(self) -> Callable[[Any, str], FeedbackEvent]:
        """`event` as one callable with the settings looked up once, for loops over many rows.

        With the identity mapping of untyped JSON rows it is `parse_row` itself
        (with this parser's settings), skipping `map_row`, which changes nothing there.
        """
        m = self.mapping
        if self.text_cells or self.typed or m.fields or m.segment_fields:
            return self.event
        return partial(parse_row, **self._settings())

    def quarantine(self, raw: str, err: RowError, source: str, where: int | str | None = None) -> QuarantineRow:
        """A quarantine row: the raw payload (cut to RAW_KEEP_CHARS) and reason, both redacted.

        Its content id hashes this parser's id namespace and the row, not
        `source` nor `where`: the same bad row read again (a retry, a copied
        file, a concurrent ingest) is stored once. `where` is where the row
        was: its line in a file (an int: a Parquet file's row number) or a SQL
        row's key (JSON text, redacted too).
        """
        raw, reason = self.redactor.text(raw[:RAW_KEEP_CHARS]), self.redactor.text(err.reason)
        row: QuarantineRow = {
            "source": source,
            "raw": raw,
            "field": err.field,
            "reason": reason,
            "content_id": quarantine_id(raw, err.field, reason, self.id_namespace),
        }
        if isinstance(where, int):
            row["line"] = where
        elif where is not None:
            row["row_key"] = self.redactor.text(where)
        return row


@dataclass
class FileReport:
    """Counts for one file or source; `resumed_from` is the position the run started at."""

    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    resumed_from: int | str = 0
    error: str | None = None


@dataclass
class IngestReport:
    """What an ingestion run did: totals, problem counts, redactions and a report per source."""

    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    redacted: Counter[str] = field(default_factory=Counter)
    per_file: dict[str, FileReport] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        """Source-level errors (e.g. a corrupt gzip stream); the rows before them were kept."""
        return [f"{p}: {r.error}" for p, r in self.per_file.items() if r.error]

    @property
    def balanced(self) -> bool:
        """The accounting identity: every row read was accepted, a duplicate, or quarantined."""
        return self.read == self.accepted + self.duplicates + self.quarantined

    def add(self, key: str, part: FileReport) -> None:
        """Add one source's counts to the totals."""
        self.per_file[key] = part
        self.read += part.read
        self.accepted += part.accepted
        self.duplicates += part.duplicates
        self.quarantined += part.quarantined

    def merge(self, other: IngestReport) -> None:
        """Add another run's counts (e.g. another source) to this one."""
        for k, part in other.per_file.items():
            self.add(k, part)
        self.reasons.update(other.reasons)
        self.redacted.update(other.redacted)

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form, as logged to MLflow."""
        return {
            "read": self.read,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "reasons": dict(self.reasons),
            "redacted": dict(self.redacted),
            "per_file": {p: asdict(r) for p, r in self.per_file.items()},
        }

    def summary(self) -> str:
        """One line: counts, then the most common problems."""
        s = f"read {self.read}, accepted {self.accepted}, duplicates {self.duplicates}, quarantined {self.quarantined}"
        if self.reasons:
            s += " (" + "; ".join(f"{k} x{n}" for k, n in self.reasons.most_common(3)) + ")"
        return s
