"""Feedback ingestion: files, HTTP and SQL sources into the store, nothing lost, nothing twice.

Every source goes through the same steps: map the team's field names
(`mapping.py`), validate the row (`rows.py`), redact PII (`redact.py`),
then commit events, quarantined rows and the source's checkpoint in one
transaction. File sources live in `files.py`, SQL sources in `sql.py`; the
HTTP endpoint (`driftloop.app.api`) uses `RowParser` directly. Plain JSONL files
take a columnar fast path (`columnar.py`, `checks.py`, `lines.py`): pyarrow
parses and checks whole batches, and every row it cannot vouch for goes
through the same row parser, so what is stored does not depend on the path.
A big JSONL file is parsed in a child process (`worker.py`) while this
process writes, so that parsing and writing run on two cores.

    >>> from driftloop.ingest import ingest_files, ingest_config
    >>> report = ingest_files(store, [Path("feedback.jsonl")])
    >>> report.summary()
    'read 2800, accepted 2795, duplicates 0, quarantined 5 (ts: no timezone x3; ...)'
"""

from driftloop.ingest.files import BATCH_LINES, decode_line, file_format, ingest_files, source_files
from driftloop.ingest.pipeline import FileReport, IngestReport, RowParser
from driftloop.ingest.redact import Redactor
from driftloop.ingest.rows import KNOWN_FIELDS, RowError, event_id_for, parse_row
from driftloop.ingest.run import check_sources, ingest_config

__all__ = [
    "BATCH_LINES",
    "KNOWN_FIELDS",
    "check_sources",
    "FileReport",
    "IngestReport",
    "Redactor",
    "RowError",
    "RowParser",
    "decode_line",
    "event_id_for",
    "file_format",
    "ingest_config",
    "ingest_files",
    "parse_row",
    "source_files",
]
