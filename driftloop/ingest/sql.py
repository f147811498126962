"""SQL sources: rows already in a team's database, read incrementally by a watermark column.

Any SQLAlchemy URL works, with a table or a SELECT. Each run reads the rows
whose watermark (a timestamp or an increasing id) is above the last committed
one, in watermark order, and commits each batch with the new watermark in the
same transaction as its events. A batch never ends between two rows that
share a watermark, so a rerun can neither skip nor repeat part of a tie.
The watermark must only grow: a row inserted later with a smaller value is
not seen.

    >>> src = SqlSource(url="postgresql+psycopg://app@db/app", table="feedback_log", watermark="id")
    >>> ingest_sql(store, src).summary()
    'read 500, accepted 500, duplicates 0, quarantined 0'
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import MetaData, Table, create_engine, select, text
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from driftloop.core.config import SqlSource
from driftloop.core.errors import InputError
from driftloop.ingest.files import Record, run_batches
from driftloop.ingest.pipeline import FileReport, IngestReport, Progress, RowParser
from driftloop.ingest.redact import Redactor
from driftloop.store import Store


def source_key(src: SqlSource) -> str:
    """Checkpoint key of a SQL source: `sql:<name>` (the table, or a hash of the query)."""
    name = src.name or src.table or hashlib.sha256((src.query or "").encode()).hexdigest()[:16]
    return f"sql:{name}"


def dump_watermark(v: Any) -> str:
    """Checkpoint text for a watermark value, keeping its type so it binds back the same."""
    if isinstance(v, datetime):
        return json.dumps({"t": "datetime", "v": v.isoformat()})
    if isinstance(v, date):
        return json.dumps({"t": "date", "v": v.isoformat()})
    if isinstance(v, Decimal):
        return json.dumps({"t": "decimal", "v": str(v)})
    if isinstance(v, (bool, int, float, str)):
        return json.dumps({"t": type(v).__name__, "v": v})
    raise InputError(f"watermark value {type(v).__name__!r} is not a number, string or timestamp")


def load_watermark(s: str | None) -> Any:
    """The watermark value stored by `dump_watermark`, or None when there is none."""
    if not s:
        return None
    d = json.loads(s)
    t, v = d["t"], d["v"]
    return {"datetime": datetime.fromisoformat, "date": date.fromisoformat, "decimal": Decimal}.get(t, lambda x: x)(v)


def ingest_sql(
    store: Store,
    src: SqlSource,
    redactor: Redactor | None = None,
    progress: Progress | None = None,
    batch_rows: int | None = None,
) -> IngestReport:
    """Read the source's rows above its watermark into the store; return the report.

    Raises InputError when the database cannot be reached or the table,
    query or watermark column is wrong; nothing is written then.
    """
    redactor = redactor if redactor is not None else Redactor()
    before = Counter(redactor.counts)
    key = source_key(src)
    parser = RowParser(src.mapping, redactor, typed=True, id_namespace=src.id_namespace or key)
    report, fr = IngestReport(), FileReport()
    last = load_watermark(store.get_checkpoint(key))
    fr.resumed_from = "" if last is None else str(last)
    engine = create_engine(src.url)
    where = src.table or "query"
    try:
        with engine.connect() as conn:
            if src.table:
                table = Table(src.table, MetaData(), autoload_with=conn)
                if src.watermark not in table.c:
                    raise InputError(f"sql source {src.table}: no column {src.watermark!r}")
                col = table.c[src.watermark]
                stmt = select(table).order_by(col)
                if last is not None:
                    stmt = stmt.where(col > _bind(last))
            else:
                q = conn.dialect.identifier_preparer.quote(src.watermark)
                cond = f" WHERE src.{q} > :driftloop_wm" if last is not None else ""
                stmt = text(f"SELECT * FROM ({src.query}) AS src{cond} ORDER BY src.{q}")
                if last is not None:
                    stmt = stmt.bindparams(driftloop_wm=last)
            rows = conn.execution_options(stream_results=True, yield_per=1000).execute(stmt).mappings()
            if not src.table and src.watermark not in rows.keys():
                raise InputError(f"sql source {where}: the query has no column {src.watermark!r}")
            keys = [c.name for c in table.primary_key.columns] if src.table else []
            run_batches(
                store,
                _records(rows, src.watermark, keys or [src.watermark]),
                last,
                parser,
                f"sql:{where}",
                key,
                dump_watermark,
                fr,
                report.reasons,
                batch_rows or src.batch_rows,
            )
    except NoSuchTableError:
        raise InputError(
            f"sql source: no table {src.table!r} at {engine.url.render_as_string(hide_password=True)}"
        ) from None
    except SQLAlchemyError as e:
        raise InputError(f"sql source {where}: {str(e.orig or e).splitlines()[0][:200]}") from None
    finally:
        engine.dispose()
    report.add(key, fr)
    report.redacted = redactor.counts - before
    return report


def _records(rows: Iterator[Any], wm: str, keys: list[str]) -> Iterator[Record]:
    """Rows as records; a row's position is its watermark, or None where the next row shares it.

    A row's key (for its quarantine row) is its `keys` columns as JSON: the
    table's primary key, else the watermark.
    """
    prev: dict[str, Any] | None = None
    for r in rows:
        row = dict(r)
        if prev is not None:
            yield (prev[wm] if row[wm] != prev[wm] else None), prev, _raw(prev), _key(prev, keys)
        prev = row
    if prev is not None:
        yield prev[wm], prev, _raw(prev), _key(prev, keys)


def _key(row: dict[str, Any], keys: list[str]) -> str:
    return json.dumps({k: row.get(k) for k in keys}, default=str, ensure_ascii=False)


def _raw(row: dict[str, Any]) -> str:
    return json.dumps(row, default=str, ensure_ascii=False)


def _bind(v: Any) -> Any:
    from sqlalchemy import bindparam

    return bindparam("driftloop_wm", v)
