"""File ingestion: JSONL (optionally gzip) feedback files into the store.

Files are streamed line by line and written in batches; each batch commits with
the file's checkpoint (a byte offset into the uncompressed stream) in the same
transaction, so an interrupted run resumes after its last committed batch and a
second run over the same files adds nothing. A line that cannot be accepted
(malformed JSON, invalid UTF-8, a field out of range) is quarantined with its
reason; it never stops the run. Always `read == accepted + duplicates +
quarantined`.

    >>> report = ingest_files(store, [Path("feedback.jsonl.gz")])
    >>> report.read, report.accepted, report.duplicates, report.quarantined
    (2800, 2795, 0, 5)
    >>> report.reasons.most_common(1)
    [('ts: no timezone', 3)]

Row validation lives in `parse_row`, which later sources (CSV, HTTP, SQL)
reuse; it raises `RowError(field, problem)` and nothing else.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from pydantic import ValidationError

from driftloop.errors import InputError
from driftloop.store import Store
from driftloop.types import FeedbackEvent

BATCH_LINES = 2_000  # lines per transaction
MAX_LINE_BYTES = 8 * 1024 * 1024  # a longer line is quarantined, not parsed
RAW_KEEP_BYTES = 64 * 1024  # how much of an over-long line the quarantine keeps
HEAD_BYTES = 4096  # bytes hashed to tell a replaced file from an appended one
FUTURE_TOLERANCE = timedelta(days=1)  # clock skew allowed for event timestamps
# Earliest accepted timestamp; also keeps every ts inside pandas' datetime64[ns] range.
MIN_TS = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_INT = 2**31 - 1  # token counts are 32-bit integers in the store
KNOWN_FIELDS = {
    "event_id", "ts", "model_version", "prompt", "response", "rating", "thumbs_up",
    "correction", "segment", "latency_ms", "tokens_in", "tokens_out", "metadata",
}
Progress = Callable[[int, int], None]


class RowError(ValueError):
    """A row that cannot be accepted: which field is at fault and what is wrong with it.

    `problem` is short and value-free, so reports can count problems;
    `detail` (optional) says more and goes to the quarantine row's reason.
    """

    def __init__(self, field: str, problem: str, detail: str = "") -> None:
        super().__init__(f"{field}: {problem}" + (f" ({detail})" if detail else ""))
        self.field, self.problem, self.detail = field, problem, detail

    @property
    def key(self) -> str:
        """`field: problem`, the key under which reports count this error."""
        return f"{self.field}: {self.problem}"

    @property
    def reason(self) -> str:
        """The problem with its detail, as written to the quarantine row."""
        return self.problem + (f" ({self.detail})" if self.detail else "")


@dataclass
class FileReport:
    """Counts for one file; `resumed_from` is the byte offset the run started at."""

    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    resumed_from: int = 0
    error: str | None = None


@dataclass
class IngestReport:
    """What an ingestion run did: totals, problem counts and a report per file."""

    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    per_file: dict[str, FileReport] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        """File-level errors (e.g. a corrupt gzip stream); the lines before them were kept."""
        return [f"{p}: {r.error}" for p, r in self.per_file.items() if r.error]

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form, as logged to MLflow."""
        return {"read": self.read, "accepted": self.accepted, "duplicates": self.duplicates,
                "quarantined": self.quarantined, "reasons": dict(self.reasons),
                "per_file": {p: asdict(r) for p, r in self.per_file.items()}}

    def summary(self) -> str:
        """One line: counts, then the most common problems."""
        s = (f"read {self.read}, accepted {self.accepted}, duplicates {self.duplicates}, "
             f"quarantined {self.quarantined}")
        if self.reasons:
            s += " (" + "; ".join(f"{k} x{n}" for k, n in self.reasons.most_common(3)) + ")"
        return s


# ---------------------------------------------------------------- row parsing
def parse_row(obj: Any, source: str, now: datetime | None = None) -> FeedbackEvent:
    """Validate one decoded row of the feedback format and return the event.

    `ts` must be ISO-8601 with a timezone, from 1970 on and at most a day in
    the future (relative to `now`, default the current time); `rating` is 1-5 stars
    (an integer, or a string or float holding one), normalised to (s-1)/4 with
    the raw value kept; `thumbs_up` is a boolean or null; `segment` maps
    strings to strings. Keys outside the format go into `metadata`. Without an
    `event_id` the id is a hash of the event's content; `source` (the file or
    endpoint the row came from) never enters it, so one event in two files is
    stored once. Raises `RowError` and nothing else.
    """
    if not isinstance(obj, dict):
        raise RowError("(row)", "not a JSON object", type(obj).__name__)
    now = now or datetime.now(timezone.utc)
    ts = _timestamp(obj.get("ts"), now)
    prompt = _text("prompt", obj.get("prompt"), required=True)
    response = _text("response", obj.get("response")) or ""
    correction = _text("correction", obj.get("correction")) or None
    model_version = _text("model_version", obj.get("model_version"), numbers=True) or ""
    if len(model_version) > 128:
        raise RowError("model_version", "longer than 128 characters")
    rating, rating_raw = _rating(obj.get("rating"))
    thumbs = obj.get("thumbs_up")
    if thumbs is not None and not isinstance(thumbs, bool):
        raise RowError("thumbs_up", "not a boolean")
    segment = _segment(obj.get("segment"))
    latency = _number("latency_ms", obj.get("latency_ms"))
    tokens_in = _count("tokens_in", obj.get("tokens_in"))
    tokens_out = _count("tokens_out", obj.get("tokens_out"))
    metadata = obj.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise RowError("metadata", "not an object")
    else:
        metadata = dict(metadata)
    metadata.update({k: v for k, v in obj.items() if k not in KNOWN_FIELDS})
    _check_json("metadata", metadata)
    content = {
        "ts": ts.isoformat(), "model_version": model_version, "prompt": prompt, "response": response,
        "rating_raw": rating_raw, "thumbs_up": thumbs, "correction": correction, "segment": segment,
        "latency_ms": latency, "tokens_in": tokens_in, "tokens_out": tokens_out,
    }
    event_id = _event_id(obj.get("event_id"), content)
    try:
        return FeedbackEvent(event_id=event_id, rating=rating, metadata=metadata, **content)
    except ValidationError as e:  # pragma: no cover - the checks above are stricter
        err = e.errors()[0]
        raise RowError(".".join(str(x) for x in err["loc"]) or "(row)", "invalid", err["msg"]) from None


def event_id_for(content: dict[str, Any]) -> str:
    """32 hex characters of SHA-256 over the canonical JSON of an event's content."""
    canon = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:32]


def _event_id(given: Any, content: dict[str, Any]) -> str:
    if given is None:
        return event_id_for(content)
    if isinstance(given, int) and not isinstance(given, bool):
        given = str(given)
    eid = _text("event_id", given)
    if not eid or not eid.strip():
        raise RowError("event_id", "empty")
    if len(eid) > 64:
        raise RowError("event_id", "longer than 64 characters")
    return eid


def _timestamp(v: Any, now: datetime) -> datetime:
    if v is None:
        raise RowError("ts", "missing")
    if not isinstance(v, str):
        raise RowError("ts", "not an ISO-8601 string")
    try:
        ts = datetime.fromisoformat(v.strip())
    except ValueError:
        raise RowError("ts", "not ISO-8601", v[:64]) from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise RowError("ts", "no timezone", v[:64])
    try:
        ts = ts.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise RowError("ts", "out of range", v[:64]) from None
    if ts > now + FUTURE_TOLERANCE:
        raise RowError("ts", "more than 1 day in the future", v[:64])
    if ts < MIN_TS:
        raise RowError("ts", "before 1970", v[:64])
    return ts


def _text(name: str, v: Any, required: bool = False, numbers: bool = False) -> str | None:
    if v is None:
        if required:
            raise RowError(name, "missing")
        return None
    if numbers and isinstance(v, (int, float)) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str):
        raise RowError(name, "not a string")
    _check_str(name, v)
    if required and not v.strip():
        raise RowError(name, "empty")
    return v


def _check_str(name: str, s: str) -> None:
    # PostgreSQL text cannot hold NUL; a lone surrogate cannot be stored as UTF-8.
    if "\x00" in s:
        raise RowError(name, "contains a NUL character")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise RowError(name, "invalid Unicode (lone surrogate)") from None


def _check_json(name: str, v: Any, depth: int = 0) -> None:
    if depth > 32:
        raise RowError(name, "nested too deeply")
    if isinstance(v, str):
        _check_str(name, v)
    elif isinstance(v, float) and not math.isfinite(v):
        raise RowError(name, "non-finite number")
    elif isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise RowError(name, "non-string key")
            _check_str(name, k)
            _check_json(name, x, depth + 1)
    elif isinstance(v, list):
        for x in v:
            _check_json(name, x, depth + 1)
    elif v is not None and not isinstance(v, (bool, int, float)):
        raise RowError(name, "not JSON", type(v).__name__)


def _rating(v: Any) -> tuple[float | None, str | None]:
    if v is None:
        return None, None
    stars: Any = v
    if isinstance(v, str):
        try:
            stars = float(v.strip())
        except ValueError:
            raise RowError("rating", "not 1-5 stars", v[:32]) from None
    if isinstance(stars, float) and stars.is_integer():
        stars = int(stars)
    if isinstance(stars, bool) or not isinstance(stars, int) or not 1 <= stars <= 5:
        raise RowError("rating", "not 1-5 stars", repr(v)[:32])
    return (stars - 1) / 4, str(stars)


def _segment(v: Any) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise RowError("segment", "not an object")
    for k, x in v.items():
        if not isinstance(k, str) or not isinstance(x, str):
            raise RowError("segment", "values must be strings")
        _check_str("segment", k)
        _check_str("segment", x)
    return dict(v)


def _number(name: str, v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RowError(name, "not a number")
    try:
        x = float(v)
    except OverflowError:
        raise RowError(name, "out of range") from None
    if not math.isfinite(x) or x < 0:
        raise RowError(name, "not a finite non-negative number")
    return x


def _count(name: str, v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise RowError(name, "not an integer")
    if not 0 <= v <= MAX_INT:
        raise RowError(name, "out of range")
    return v


# ------------------------------------------------------------------ file reading
def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _open(path: Path, raw: BinaryIO) -> BinaryIO:
    return gzip.GzipFile(fileobj=raw, mode="rb") if _is_gzip(path) else raw  # type: ignore[return-value]


def _head(path: Path) -> bytes:
    with open(path, "rb") as raw:
        return _open(path, raw).read(HEAD_BYTES)


def _position(offset: int, head: bytes) -> str:
    """Checkpoint text: the offset and a hash of the bytes before it (at most HEAD_BYTES)."""
    return f"{offset}:{hashlib.sha256(head[:offset]).hexdigest()[:16]}"


def _resume_offset(position: str | None, head: bytes, stream: BinaryIO, plain_size: int | None) -> int:
    """Seek `stream` to the checkpoint; 0 when the file was replaced or truncated since.

    `plain_size` is the file's size when it is not compressed (a plain file
    seeks past its end without complaint); a gzip stream stops at its end.
    """
    if not position:
        return 0
    try:
        offset = int(position.split(":", 1)[0])
    except ValueError:
        return 0
    if offset <= 0 or _position(offset, head) != position:
        return 0
    if plain_size is not None and offset > plain_size:
        return 0
    stream.seek(offset)
    if stream.tell() != offset:
        stream.seek(0)
        return 0
    return offset


def _lines(stream: BinaryIO, offset: int) -> Iterator[tuple[int, bytes | None, bytes]]:
    """Yield (end offset, line or None if over-long, raw sample) for each non-blank line."""
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        offset += len(line)
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            sample = line[:RAW_KEEP_BYTES]
            while line and not line.endswith(b"\n"):  # skip the rest of the line
                line = stream.readline(MAX_LINE_BYTES)
                offset += len(line)
            yield offset, None, sample
            continue
        if offset == len(line) and line.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM at file start
            line = line[3:]
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield offset, line, line


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard constant {name}")


def decode_line(line: bytes | None, source: str) -> FeedbackEvent:
    """Parse one JSONL line (bytes) into an event, raising RowError for any fault."""
    if line is None:
        raise RowError("(line)", "too long", f"over {MAX_LINE_BYTES} bytes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RowError("(line)", "invalid UTF-8", f"byte {e.start}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise RowError("(line)", "malformed JSON", str(e)[:120]) from None
    return parse_row(obj, source)


# ---------------------------------------------------------------- ingestion
def ingest_files(
    store: Store, files: list[Path], progress: Progress | None = None, batch_lines: int = BATCH_LINES
) -> IngestReport:
    """Ingest JSONL / JSONL.gz feedback files, resuming each from its checkpoint.

    Each batch of `batch_lines` lines commits together with the file's
    checkpoint (key `file:<absolute path>`). A file replaced or truncated since
    its checkpoint is read again from the start (duplicates are skipped). A
    corrupt gzip stream stops that file only and is reported in `errors`.
    `progress(done_bytes, total_bytes)` is called after each batch, in bytes
    on disk. Raises InputError when a file does not exist.
    """
    paths = [Path(f) for f in files]
    for p in paths:
        if not p.is_file():
            raise InputError(f"{p}: no such file")
    total = sum(p.stat().st_size for p in paths)
    report, done = IngestReport(), 0
    for p in paths:
        key = str(p.resolve())
        fr = report.per_file.setdefault(key, FileReport())
        _ingest_file(store, p.resolve(), fr, report.reasons, batch_lines,
                     (lambda n, base=done: progress(base + n, total)) if progress else None)
        for k in ("read", "accepted", "duplicates", "quarantined"):
            setattr(report, k, getattr(report, k) + getattr(fr, k))
        done += p.stat().st_size
    return report


def _ingest_file(store: Store, path: Path, fr: FileReport, reasons: Counter[str], batch_lines: int,
                 progress: Callable[[int], None] | None) -> None:
    source, key = str(path), f"file:{path}"
    head = _head(path)
    events: list[FeedbackEvent] = []
    quarantine: list[dict[str, Any]] = []
    with open(path, "rb") as raw:
        stream = _open(path, raw)
        plain_size = None if stream is not raw else path.stat().st_size
        offset = fr.resumed_from = _resume_offset(store.get_checkpoint(key), head, stream, plain_size)
        committed = offset

        def flush() -> None:
            nonlocal committed
            accepted, dups = store.add_batch(events, quarantine, source, (key, _position(offset, head)))
            fr.accepted += accepted
            fr.duplicates += dups
            fr.quarantined += len(quarantine)
            events.clear()
            quarantine.clear()
            committed = offset
            if progress:
                progress(raw.tell())

        try:
            for offset, line, sample in _lines(stream, offset):
                fr.read += 1
                try:
                    events.append(decode_line(line, source))
                except RowError as e:
                    reasons[e.key] += 1
                    quarantine.append({"source": source, "raw": sample.decode("utf-8", "replace"),
                                       "field": e.field, "reason": e.reason})
                if len(events) + len(quarantine) >= batch_lines:
                    flush()
        except (OSError, EOFError, zlib.error) as e:
            fr.error = f"unreadable after byte {offset}: {e}"
        if events or quarantine or offset != committed:
            flush()
