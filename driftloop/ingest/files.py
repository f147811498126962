"""File sources: JSONL, CSV and Parquet feedback files (JSONL and CSV may be gzip) into the store.

Files are streamed and written in batches; each batch commits with the file's
checkpoint in the same transaction, so an interrupted run (even a SIGKILL)
resumes after its last committed batch and a second run over the same files
adds nothing. The checkpoint of JSONL and CSV is a byte offset into the
uncompressed stream, of Parquet a row number, each with a hash of the file's
head so that a replaced file is read again from the start. A plain file's
checkpoint also hashes the 4 KB just before its offset, and a gzip file's its
size, mtime and inode: a file regenerated in place whose first rows did not
change is read again from the start too, not resumed at an offset that now
falls inside other rows (event ids and quarantine content ids make the
re-read store nothing twice; its report says `resumed_from` 0). A row that cannot
be accepted (malformed JSON, invalid UTF-8, a ragged CSV row, a field out of
range) is quarantined with its reason; it never stops the run. Always
`read == accepted + duplicates + quarantined`; a quarantine row keeps the
row's line (a Parquet row number). JSONL, CSV and Parquet, with a field
mapping or not, on the stars or thumbs scale, take the columnar fast path
(`columnar.py`, `tabular.py`, with pyarrow), which stores exactly what the
row path here would; a big file is parsed by a child process while this one
writes (`worker.py`).

    >>> report = ingest_files(store, [Path("feedback.jsonl.gz"), Path("export.csv")])
    >>> report.read, report.accepted, report.duplicates, report.quarantined
    (2800, 2795, 0, 5)
    >>> report.reasons.most_common(1), dict(report.redacted)
    ([('ts: no timezone', 3)], {'email': 12})
"""

from __future__ import annotations

import csv
import hashlib
import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from driftloop.core.config import FileSource
from driftloop.core.errors import ConfigError, InputError
from driftloop.core.types import FeedbackEvent
from driftloop.ingest import columnar, tabular, worker
from driftloop.ingest.lines import count_lines
from driftloop.ingest.mapping import unmapped
from driftloop.ingest.namespaces import record_namespace, stable_namespaces
from driftloop.ingest.pipeline import FileReport, IngestReport, Progress, RowParser
from driftloop.ingest.positions import (
    head_bytes,
    marked_position,
    open_stream,
    resume_offset,
    same_mark,
    stat_mark,
    tail_mark,
)
from driftloop.ingest.redact import Redactor
from driftloop.ingest.rows import RowError, parse_row
from driftloop.store import Store
from driftloop.store.batch import Batch, Checkpoint, QuarantineRow

BATCH_LINES = 2_000  # rows per transaction
MAX_LINE_BYTES = 8 * 1024 * 1024  # a longer line is quarantined, not parsed
RAW_KEEP_BYTES = 64 * 1024  # how much of an over-long line the quarantine keeps
PARQUET_BATCH = 8_192  # rows decoded at a time from a Parquet file
_DIGITS_TO_0 = bytes.maketrans(b"0123456789", b"0" * 10)  # see json_object
_LONG_DIGITS = b"0" * 19
BARE = "files"  # id namespace of files given as bare paths: one source (see rows.event_id_for)
# One record: (position after it, the decoded row or the error, the raw text for quarantine,
# as str or as UTF-8 bytes, where it was: its line (a Parquet row number) or its key as JSON text).
Record = tuple[int, Any, "str | bytes", "int | str | None"]


def file_format(path: Path, fmt: str = "auto") -> str:
    """`jsonl`, `csv` or `parquet`: `fmt` unless it is `auto`, else by the name (a trailing .gz ignored)."""
    if fmt != "auto":
        return fmt
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return "jsonl"


def source_files(cfg: Any) -> list[tuple[Path, FileSource]]:
    """Every file the config's file sources match, sorted within each source, with its source."""
    import glob

    out: list[tuple[Path, FileSource]] = []
    for s in cfg.sources:
        if s.kind == "files":
            out.extend((Path(p), s) for p in sorted(glob.glob(str(cfg.path(s.path)))))
    return out


# ------------------------------------------------------------------ streams
def _lines(stream: BinaryIO, offset: int, number: int) -> Iterator[tuple[int, bytes | None, bytes, int]]:
    """Yield (end offset, line or None if over-long, raw sample, line number) for each non-blank line.

    `number` is the number of lines before `offset`.
    """
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        offset += len(line)
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            sample = line[:RAW_KEEP_BYTES]
            while line and not line.endswith(b"\n"):  # skip the rest of the line
                line = stream.readline(MAX_LINE_BYTES)
                offset += len(line)
            yield offset, None, sample, number
            continue
        if offset == len(line) and line.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM at file start
            line = line[3:]
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield offset, line, line, number


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard constant {name}")


def json_object(line: bytes | None) -> Any:
    """Decode one JSONL line (bytes); raises RowError for an over-long line, bad UTF-8 or bad JSON."""
    if line is None:
        raise RowError("(line)", "too long", f"over {MAX_LINE_BYTES} bytes")
    try:
        # orjson is several times faster; whatever it refuses (bad UTF-8, NaN, a lone
        # surrogate, deep nesting) goes through the standard decoder below, so the row
        # is accepted or quarantined exactly as before. A run of 19+ digits may be an
        # integer beyond 64 bits, which orjson would turn into a float: standard path.
        # (A translate and a substring test cost a quarter of a regex search.)
        if _LONG_DIGITS not in line.translate(_DIGITS_TO_0):
            return orjson.loads(line)
    except orjson.JSONDecodeError:
        pass
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RowError("(line)", "invalid UTF-8", f"byte {e.start}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise RowError("(line)", "malformed JSON", str(e)[:120]) from None


def decode_line(line: bytes | None, source: str) -> FeedbackEvent:
    """Parse one JSONL line (bytes) into an event, raising RowError for any fault (no redaction)."""
    return parse_row(json_object(line), source)


def _jsonl_records(stream: BinaryIO, offset: int, number: int) -> Iterator[Record]:
    for end, line, sample, n in _lines(stream, offset, number):
        try:
            obj: Any = json_object(line)
        except RowError as e:
            obj = e
        yield end, obj, sample, n  # bytes: run_batches decodes it only for a quarantined row


def _csv_records(stream: BinaryIO, offset: int, number: int | None = None) -> Iterator[Record]:
    """Records of a CSV stream after its header, resuming at byte `offset` (0: just after the header).

    `number` is the number of lines before `offset` (None: count them).
    """
    pos, buf, bad, lineno = [0], [], [False], [0]

    def lines() -> Iterator[str]:
        while True:
            line = stream.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            pos[0] += len(line)
            lineno[0] += 1
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                bad[0], text = True, line.decode("utf-8", "replace")
            buf.append(text)
            yield text

    reader = csv.reader(lines(), strict=False)
    try:
        header = next(reader)
    except StopIteration:
        return  # an empty file has no rows
    header = [h.lstrip("\ufeff").strip() for h in header]
    if offset > pos[0]:
        if number is None:
            number = count_lines(stream, offset)
        stream.seek(offset)
        pos[0], lineno[0] = offset, number
    buf.clear()
    bad[0] = False
    while True:
        first = lineno[0] + 1  # the record starts on the next line read
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            row, err = None, RowError("(row)", "malformed CSV", str(e)[:120])
        raw = "".join(buf)
        buf.clear()
        if row is not None:
            if not row or (len(row) == 1 and not row[0].strip()):
                bad[0] = False
                continue  # a blank line is not a row
            if bad[0]:
                err = RowError("(row)", "invalid UTF-8")
            elif len(row) != len(header):
                err = RowError("(row)", "ragged CSV row", f"{len(row)} fields, header has {len(header)}")
            else:
                err = None
        bad[0] = False
        yield pos[0], err if err is not None else dict(zip(header, row)), raw, first


csv.field_size_limit(MAX_LINE_BYTES)  # a long cell is quarantined by parse_row, not by csv


# ---------------------------------------------------------------- ingestion
def ingest_files(
    store: Store,
    files: list[Path] | list[tuple[Path, FileSource]],
    progress: Progress | None = None,
    batch_lines: int = BATCH_LINES,
    redactor: Redactor | None = None,
) -> IngestReport:
    """Ingest feedback files (JSONL, CSV, Parquet; JSONL and CSV may be gzip), each from its checkpoint.

    `files` are paths (JSONL format, identity mapping, one source whose id
    namespace is BARE) or (path, FileSource) pairs as `source_files(cfg)`
    returns them. Each batch of `batch_lines`
    rows commits together with the file's checkpoint (key `file:<absolute
    path>`). A file replaced or truncated since its checkpoint is read again
    from the start (duplicates are skipped). A corrupt gzip stream stops that
    file only and is reported in `errors`. `redactor` (default: all built-in
    detectors) removes PII before anything is stored. `progress(done_bytes,
    total_bytes)` is called after each batch, in bytes on disk. Raises
    InputError when a file does not exist.
    """
    pairs = [
        (Path(f[0]), f[1]) if isinstance(f, tuple) else (Path(f), FileSource(path=str(f), id_namespace=BARE))
        for f in files
    ]
    for p, _ in pairs:
        if not p.is_file():
            raise InputError(f"{p}: no such file")
    redactor = redactor if redactor is not None else Redactor()
    before = Counter(redactor.counts)
    total = sum(p.stat().st_size for p, _ in pairs)
    report, done = IngestReport(), 0
    spaces = stable_namespaces(store, pairs)  # a glob edited keeps its files' ids (see namespaces.py)
    for p, src in pairs:
        key = str(p.resolve())
        fr = FileReport()
        record_namespace(store, p, spaces[id(src)])
        parser = RowParser(src.mapping, redactor, id_namespace=spaces[id(src)])
        with columnar.arrow_on_malloc():
            _ingest_file(
                store,
                p.resolve(),
                file_format(p, src.format),
                parser,
                fr,
                report.reasons,
                batch_lines,
                (lambda n, base=done: progress(base + n, total)) if progress else None,
            )
        report.add(key, fr)
        done += p.stat().st_size
    report.redacted = redactor.counts - before
    return report


def _ingest_file(
    store: Store,
    path: Path,
    fmt: str,
    parser: RowParser,
    fr: FileReport,
    reasons: Counter[str],
    batch_lines: int,
    progress: Callable[[int], None] | None,
) -> None:
    source, key = str(path), f"file:{path}"
    parser.text_cells, parser.typed = fmt == "csv", fmt == "parquet"
    with open(path, "rb") as raw:
        if fmt == "parquet":
            # A Parquet file is rewritten whole, never appended to: its head and size identify it.
            ident = hashlib.sha256(head_bytes(path, decompress=False) + str(path.stat().st_size).encode()).hexdigest()[
                :16
            ]
            done, _, seen = (store.get_checkpoint(key) or "0:").partition(":")
            records, fr.resumed_from = _parquet_records(path, int(done) if seen == ident and done.isdigit() else 0)
            offset_fn = lambda n: f"{n}:{ident}"  # noqa: E731
            begin = int(fr.resumed_from)
            if columnar.fast_path_ok(parser, fmt):
                at = tabular.ingest_parquet(
                    store, path, begin, parser, source, key, offset_fn, fr, reasons, batch_lines, progress
                )
                if at is None:
                    return
                records, begin = _parquet_records(path, at)[0], at
        else:
            head = head_bytes(path)
            stream = open_stream(path, raw)
            plain_size = None if stream is not raw else path.stat().st_size
            mark: Callable[[int], bytes] = (
                partial(tail_mark, raw.fileno()) if stream is raw else partial(same_mark, stat_mark(path))
            )
            start = resume_offset(store.get_checkpoint(key), head, stream, plain_size, mark)
            fr.resumed_from = start
            offset_fn = partial(marked_position, head, mark)
            records: Iterator[Record] | None = None
            if fmt == "csv":
                if columnar.fast_path_ok(parser, fmt):
                    at = tabular.ingest_csv(
                        store, path, stream, start, parser, source, key, offset_fn, fr, reasons, batch_lines,
                        MAX_LINE_BYTES, progress,
                    )  # fmt: skip
                    if at is None:
                        return
                    start = at
                stream.seek(0)
                records = _csv_records(stream, start)
            elif fmt == "jsonl" and columnar.fast_path_ok(parser):
                tabular.check_first_block(stream, start, parser, source, batch_lines, MAX_LINE_BYTES)
                number = count_lines(stream, start) if start else 0
                status = "fallback"
                if worker.process_ok(path, start):  # a big file: parsed in a child process
                    status, start = worker.ingest_in_process(
                        store,
                        path,
                        start,
                        parser,
                        source,
                        key,
                        offset_fn,
                        fr,
                        reasons,
                        batch_lines,
                        MAX_LINE_BYTES,
                        RAW_KEEP_BYTES,
                        progress,
                        stream if stream is raw else None,
                        number,
                    )
                    if status == "done":
                        return
                    stream.seek(start)
                    number = count_lines(stream, start) if start else 0
                if status == "fallback":
                    left = worker.ingest_stream(
                        store,
                        stream,
                        start,
                        parser,
                        source,
                        key,
                        offset_fn,
                        fr,
                        reasons,
                        batch_lines,
                        MAX_LINE_BYTES,
                        RAW_KEEP_BYTES,
                        (lambda: progress(raw.tell())) if progress else None,
                        number,
                    )
                    if left is None:
                        return
                    start = left
                    stream.seek(start)  # a read error: the row path reads on from the last commit and reports it
            if records is None:
                records = _jsonl_records(stream, start, count_lines(stream, start) if start else 0)
            begin = start
        run_batches(
            store,
            records,
            begin,
            parser,
            source,
            key,
            offset_fn,
            fr,
            reasons,
            batch_lines,
            (lambda: progress(raw.tell())) if progress else None,
        )


def _parquet_records(path: Path, start: int) -> tuple[Iterator[Record], int]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own ArrowInvalid / OSError kinds
        raise InputError(f"{path}: not a readable Parquet file ({str(e)[:120]})") from None
    if start > pf.metadata.num_rows:
        start = 0

    def gen() -> Iterator[Record]:
        n = 0
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH):
            if n + batch.num_rows <= start:
                n += batch.num_rows
                continue
            for row in batch.to_pylist():
                n += 1
                if n > start:
                    yield n, row, json.dumps(row, default=str, ensure_ascii=False), n

    return gen(), start


def run_batches(
    store: Store,
    records: Iterator[Record],
    start: Any,
    parser: RowParser,
    source: str,
    key: str,
    position: Callable[[Any], str],
    fr: FileReport,
    reasons: Counter[str],
    batch_rows: int,
    progress: Callable[[], None] | None = None,
) -> None:
    """Parse records into events or quarantine rows and commit them in batches with the checkpoint.

    Each record is (position after it, decoded row or RowError, raw text);
    a position of None means "not a safe place to commit" (a SQL row whose
    watermark the next row shares), so a batch only ends at a real position.
    `position(p)` turns a record position into checkpoint text. A read error
    of the underlying stream (OSError, a corrupt gzip) ends the source and is
    kept in `fr.error`; what was read before it is committed. Raises
    ConfigError, before the first commit, for a mapped field that no row of
    the first batch holds (`mapping.unmapped`).
    """
    events: list[FeedbackEvent] = []
    quarantine: list[QuarantineRow] = []
    offset = committed = safe = start
    m = parser.mapping
    first: list[dict[str, Any]] | None = [] if m.fields or m.segment_fields else None  # the first batch's rows

    def flush(full: bool = False) -> None:
        nonlocal committed, first
        if first is not None:
            typo = unmapped(m, first, resumed=bool(start), full=full)
            if typo:
                raise ConfigError(f"{source}: {typo}; nothing was stored")
            first = None
        checkpoint = Checkpoint(key, position(safe))
        accepted, dups = store.write_batch(Batch(source, events, quarantine, checkpoint, parser.id_namespace))
        fr.accepted += accepted
        fr.duplicates += dups
        fr.quarantined += len(quarantine)
        events.clear()
        quarantine.clear()
        committed = safe
        if progress:
            progress()

    event, append = parser.event_function(), events.append  # looked up once: this loop runs per row
    try:
        for offset, obj, raw, where in records:
            fr.read += 1
            if first is not None and isinstance(obj, dict):
                first.append(obj)
            try:
                if isinstance(obj, RowError):
                    raise obj
                append(event(obj, source))
            except RowError as e:
                reasons[e.key] += 1
                if isinstance(raw, bytes):
                    raw = raw.decode("utf-8", "replace")
                quarantine.append(parser.quarantine(raw, e, source, where))
            if offset is not None:
                safe = offset
                if len(events) + len(quarantine) >= batch_rows:
                    flush(full=True)
    except (OSError, EOFError, zlib.error) as e:
        fr.error = f"unreadable after position {safe}: {e}"
    if events or quarantine or safe != committed:
        flush()
