"""Benchmark: driftloop's file ingestion against a raw insert of the same rows, on SQLite and PostgreSQL.

Generates `--rows` synthetic feedback events as JSONL (about 1% malformed or
invalid rows, 2% duplicates, some e-mail addresses and phone numbers in the
texts). Then, each arm in its own child process so that its peak RSS is its own:

1. driftloop: `ingest_files` into a fresh SQLite store (streamed parse,
   validation, PII redaction, deduplication, quarantine, checkpointed batches);
2. raw SQLite: the same events pre-parsed (outside the timer) into the store's
   schema types, inserted with `sqlite3.executemany` in transactions of the same
   size (`--batch`), after dropping bad rows and duplicates: the floor;
3. and 4. the same on PostgreSQL (`--pg-url`, an empty database per arm is made
   with a suffix): driftloop's bulk path (COPY text built from arrow columns,
   copied straight into the table; a staging table and INSERT ... ON CONFLICT
   only where an id is already stored) against raw psycopg 3 COPY of the
   pre-parsed rows.

Rows/s is input rows per second for driftloop and inserted rows per second for the
raw arms. Prints each arm, both ratios (goal >= 0.5) and peak RSS (goal <= 500 MB),
and, since other work on a shared machine shifts wall-clock ratios, the rows per
CPU second of each arm's own process and the load average around each arm.
Run it alone, it needs both cores for a few minutes:

    .venv/bin/python benchmarks/ingest.py                       # SQLite only, 1,000,000 rows
    .venv/bin/python benchmarks/ingest.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python benchmarks/ingest.py --format csv          # also: jsonl-mapped-thumbs, parquet

`--format` writes the same events as JSONL with the user's own field names and
a thumbs rating (`up`/`down`, read through a mapping), as CSV or as Parquet
(the segment from two columns through `segment_fields`); the raw arms insert
the same pre-parsed rows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = (
    "order refund shipping label account password billing invoice delivery late return "
    "parcel tracking address change cancel subscription plan upgrade help please thanks"
).split()


FORMATS = ("jsonl", "jsonl-mapped-thumbs", "csv", "parquet")
# The user's field names of the mapped formats (FieldMapping.fields) and their segment fields.
MAPPED = {
    "event_id": "id",
    "ts": "created_at",
    "model_version": "model",
    "prompt": "question",
    "response": "answer",
    "rating": "feedback",
    "latency_ms": "latency",
}
SEGMENT_FIELDS = ["topic", "locale"]
COLUMNS = [
    "event_id",
    "ts",
    "model_version",
    "prompt",
    "response",
    "rating",
    "thumbs_up",
    "topic",
    "locale",
    "latency_ms",
    "tokens_in",
    "tokens_out",
]


def mapping_for(fmt: str) -> dict:
    """The FieldMapping (as keyword arguments) the benchmark's source of format `fmt` is read with."""
    if fmt == "jsonl":
        return {}
    if fmt == "jsonl-mapped-thumbs":
        return {"fields": MAPPED, "segment_fields": SEGMENT_FIELDS, "rating_scale": "thumbs"}
    return {"segment_fields": SEGMENT_FIELDS}


def generate(path: Path, n: int, seed: int = 0) -> dict[str, int]:
    """Write n JSONL events (streamed); return how many are valid and unique."""
    rng = random.Random(seed)
    t0 = datetime(2026, 10, 1, tzinfo=UTC)
    valid, last = 0, ""
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            r = rng.random()
            if r < 0.005:
                f.write('{"ts": "2026-10-01T00:00:00Z", "prompt": \n')
                continue
            if r < 0.01:
                f.write(json.dumps({"event_id": f"b{i}", "ts": "2026-10-01T00:00:00", "prompt": "naive"}) + "\n")
                continue
            if r < 0.03 and last:
                f.write(last)  # an exact duplicate of the previous event
                continue
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20)))
            prompt = words + (f" mail me at user{i}@example.com" if rng.random() < 0.05 else "")
            response = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 30)))
            if rng.random() < 0.02:
                response += f" or call +1 415 555 {i % 10000:04d}"
            last = (
                json.dumps(
                    {
                        "event_id": f"e{i}",
                        "ts": (t0 + timedelta(seconds=i)).isoformat(),
                        "model_version": "3",
                        "prompt": prompt,
                        "response": response,
                        "rating": rng.randint(1, 5),
                        "thumbs_up": rng.random() < 0.8,
                        "segment": {"topic": rng.choice(WORDS[:6]), "locale": "en"},
                        "latency_ms": round(rng.lognormvariate(5, 0.5), 1),
                        "tokens_in": rng.randint(5, 60),
                        "tokens_out": rng.randint(5, 120),
                    }
                )
                + "\n"
            )
            f.write(last)
            valid += 1
    return {"rows": n, "valid_unique": valid}


def convert(src: Path, fmt: str, out: Path) -> None:
    """Write the events of the JSONL file `src` as format `fmt` (the same rows, faults and duplicates)."""
    if fmt == "jsonl-mapped-thumbs":
        with src.open(encoding="utf-8") as f, out.open("w", encoding="utf-8") as g:
            for line in f:
                try:
                    d = json.loads(line)
                except ValueError:
                    g.write(line)  # malformed stays malformed
                    continue
                g.write(json.dumps(_mapped(d)) + "\n")
        return
    rows = (_flat(line) for line in src.open(encoding="utf-8"))
    if fmt == "csv":
        import csv

        with out.open("w", encoding="utf-8", newline="") as g:
            w = csv.writer(g)
            w.writerow(COLUMNS)
            for r in rows:
                w.writerow(["" if v is None else str(v).lower() if isinstance(v, bool) else v for v in r])
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = [pa.string()] * 5 + [pa.int64(), pa.bool_(), pa.string(), pa.string(), pa.float64()] + [pa.int64()] * 2
    schema = pa.schema(list(zip(COLUMNS, types)))
    with pq.ParquetWriter(out, schema) as w:
        chunk: list[list] = []
        for r in rows:
            chunk.append(r)
            if len(chunk) == 50_000:
                w.write_table(pa.Table.from_pylist([dict(zip(COLUMNS, c)) for c in chunk], schema))
                chunk = []
        if chunk:
            w.write_table(pa.Table.from_pylist([dict(zip(COLUMNS, c)) for c in chunk], schema))


def _thumb(stars: int) -> str:
    return "up" if stars >= 4 else "down"


def _mapped(d: dict) -> dict:
    seg = d.pop("segment", None) or {}
    d.pop("thumbs_up", None)
    if "rating" in d:
        d["rating"] = _thumb(d["rating"])
    return {MAPPED.get(k, k): v for k, v in d.items()} | seg


def _flat(line: str) -> list:
    """One JSONL line as a row of COLUMNS; a malformed line becomes a row without a prompt."""
    try:
        d = json.loads(line)
    except ValueError:
        d = {"ts": "2026-10-01T00:00:00Z"}
    d |= d.pop("segment", None) or {}
    return [d.get(c) for c in COLUMNS]


def preparsed(path: Path, dialect: str, chunk: int, fmt: str = "jsonl", source: str = ""):
    """Yield lists of store tuples for the valid, unique events (parsing is not timed by the caller)."""
    from driftloop.store.engine import driver_value
    from driftloop.store.models import utcnow

    now, seen, out = driver_value(dialect, utcnow()), set(), []
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                d = json.loads(line)
                ts = datetime.fromisoformat(d["ts"])
            except (ValueError, KeyError):
                continue
            if ts.tzinfo is None or d["event_id"] in seen:
                continue
            seen.add(d["event_id"])
            s = d["rating"]
            rating, raw = ((s - 1) / 4, str(s)) if fmt != "jsonl-mapped-thumbs" else (float(s >= 4), _thumb(s))
            thumbs = d["thumbs_up"] if fmt != "jsonl-mapped-thumbs" else s >= 4
            out.append(
                (
                    d["event_id"],
                    driver_value(dialect, ts),
                    d["model_version"],
                    d["prompt"],
                    d["response"],
                    rating,
                    raw,
                    thumbs,
                    None,
                    json.dumps(d["segment"]),
                    d["latency_ms"],
                    d["tokens_in"],
                    d["tokens_out"],
                    "{}",
                    source or str(path),
                    now,
                    "files",  # id_namespace: what driftloop stores for a file given as a bare path
                )
            )
            if len(out) >= chunk:
                yield out
                out = []
    if out:
        yield out


def arm(name: str, path: Path, url: str, batch: int, fmt: str = "jsonl", events: Path | None = None) -> dict:
    """Run one arm in this process; return seconds, rows and peak RSS (MB).

    `path` is the input in format `fmt`; the raw arms read the same events from the JSONL file `events`.
    """
    from driftloop.store import Store
    from driftloop.store.batch import EVENT_COLUMNS

    store = Store(url)
    store.migrate()
    cols = ", ".join(EVENT_COLUMNS)
    seconds, cpu, rows = 0.0, 0.0, 0
    load = os.getloadavg()[0]
    if name == "driftloop":
        from driftloop.ingest import ingest_files

        t, c = time.perf_counter(), time.process_time()
        ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if fmt == "jsonl":
            rep = ingest_files(store, [path], batch_lines=batch)
        else:
            from driftloop.core.config import FieldMapping, FileSource

            src = FileSource(
                path=str(path),
                format="jsonl" if fmt.startswith("jsonl") else fmt,
                mapping=FieldMapping(**mapping_for(fmt)),
                id_namespace="files",
            )
            rep = ingest_files(store, [(path, src)], batch_lines=batch)
        seconds, cpu, rows = time.perf_counter() - t, time.process_time() - c, rep.read
        # A large file is parsed in a child process: its CPU and memory count too.
        ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu += (ch1.ru_utime + ch1.ru_stime) - (ch0.ru_utime + ch0.ru_stime)
        extra = {
            "accepted": rep.accepted,
            "duplicates": rep.duplicates,
            "quarantined": rep.quarantined,
            "redacted": dict(rep.redacted),
        }
    elif name == "raw-sqlite":
        import sqlite3

        conn = sqlite3.connect(store.engine.url.database, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # as the store's engine sets it
        sql = f"INSERT INTO feedback ({cols}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
        for chunk in preparsed(events or path, "sqlite", 100_000, fmt, str(path)):
            t, c = time.perf_counter(), time.process_time()
            for i in range(0, len(chunk), batch):
                conn.execute("BEGIN")
                conn.executemany(sql, chunk[i : i + batch])
                conn.execute("COMMIT")
            seconds += time.perf_counter() - t
            cpu += time.process_time() - c
            rows += len(chunk)
        extra = {}
    else:  # raw-copy
        import psycopg

        dsn = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn) as conn:
            for chunk in preparsed(events or path, "postgresql", 100_000, fmt, str(path)):
                t, c = time.perf_counter(), time.process_time()
                for i in range(0, len(chunk), batch):
                    with conn.cursor() as cur, cur.copy(f"COPY feedback ({cols}) FROM STDIN") as cp:
                        for r in chunk[i : i + batch]:
                            cp.write_row(r)
                    conn.commit()
                seconds += time.perf_counter() - t
                cpu += time.process_time() - c
                rows += len(chunk)
        extra = {}
    stored = store.count_events()
    store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux -> MB
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if name == "driftloop" else 0.0
    # CPU seconds of this process (all its threads; not the PostgreSQL server's): a figure that
    # other work on the machine disturbs less than wall time. Load: 1-minute average at the start.
    return {
        "arm": name,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rows": rows,
        "rows_per_s": rows / seconds,
        "rows_per_cpu_s": rows / cpu,
        "stored": stored,
        "peak_rss_mb": peak,
        "child_peak_rss_mb": child_peak,
        "load_avg": load,
        "load_avg_end": os.getloadavg()[0],
        **extra,
    }


def child(name: str, path: Path, url: str, batch: int, fmt: str, events: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--arm", name, "--input", str(path), "--url", url, "--batch", str(batch)]
        + ["--format", fmt, "--events", str(events)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def new_pg_db(pg_url: str, name: str) -> str:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(pg_url)
    with psycopg.connect(u.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}"')
        c.execute(f'CREATE DATABASE "{name}"')
    return u.set(database=name).render_as_string(hide_password=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=2000, help="rows per transaction, every arm")
    ap.add_argument("--pg-url", help="a PostgreSQL server (SQLAlchemy URL); two databases are created on it")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--format",
        choices=FORMATS,
        default="jsonl",
        help="input: JSONL in the feedback format, JSONL with the user's own field names and thumbs "
        "(a mapping), CSV or Parquet (segment fields mapped from columns)",
    )
    ap.add_argument("--only", choices=["sqlite", "postgresql"], help="run the pair of this backend only")
    ap.add_argument("--arm", help=argparse.SUPPRESS)
    ap.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--events", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.arm:
        print(json.dumps(arm(a.arm, a.input, a.url, a.batch, a.format, a.events)))
        return
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-") as tmp:
        path = Path(tmp) / "events.jsonl"
        t = time.perf_counter()
        gen = generate(path, a.rows)
        events = path
        if a.format != "jsonl":
            ext = {"csv": "csv", "parquet": "parquet"}.get(a.format, "jsonl")
            path = Path(tmp) / f"events-{a.format}.{ext}"
            convert(events, a.format, path)
        print(
            f"generated {a.rows:,} events as {a.format} ({gen['valid_unique']:,} valid and unique, "
            f"{path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s",
            flush=True,
        )
        results = {"input": gen, "batch": a.batch, "format": a.format}
        pairs = [("sqlite", "driftloop", f"sqlite:///{tmp}/driftloop.db", "raw-sqlite", f"sqlite:///{tmp}/raw.db")]
        if a.pg_url:
            pairs.append(
                (
                    "postgresql",
                    "driftloop",
                    new_pg_db(a.pg_url, "bench_driftloop"),
                    "raw-copy",
                    new_pg_db(a.pg_url, "bench_raw"),
                )
            )
        pairs = [p for p in pairs if a.only in (None, p[0])]
        for backend, ours, our_url, raw, raw_url in pairs:
            r_ours = child(ours, path, our_url, a.batch, a.format, events)
            print(
                f"{backend:10s} driftloop  {r_ours['rows_per_s']:>10,.0f} rows/s  ({r_ours['seconds']:.1f} s, "
                f"peak RSS {r_ours['peak_rss_mb']:.0f} MB + parse child {r_ours['child_peak_rss_mb']:.0f} MB, accepted {r_ours['accepted']:,}, "
                f"duplicates {r_ours['duplicates']:,}, quarantined {r_ours['quarantined']:,}, "
                f"redacted {r_ours['redacted']})",
                flush=True,
            )
            r_raw = child(raw, path, raw_url, a.batch, a.format, events)
            print(
                f"{backend:10s} {raw:10s} {r_raw['rows_per_s']:>10,.0f} rows/s  ({r_raw['seconds']:.1f} s, "
                f"{r_raw['rows']:,} rows)",
                flush=True,
            )
            ratio = r_ours["rows_per_s"] / r_raw["rows_per_s"]
            cpu_ratio = r_ours["rows_per_cpu_s"] / r_raw["rows_per_cpu_s"]
            assert r_ours["stored"] == r_raw["stored"] == gen["valid_unique"], (r_ours["stored"], r_raw["stored"])
            rss = r_ours["peak_rss_mb"] + r_ours["child_peak_rss_mb"]  # both peaks, as if at once
            print(
                f"{backend:10s} ratio {ratio:.2f}x raw (goal >= 0.5), peak RSS {rss:.0f} MB with the parse child "
                f"(goal <= 500); per CPU second (child included) {r_ours['rows_per_cpu_s']:,.0f} vs {r_raw['rows_per_cpu_s']:,.0f} "
                f"rows ({cpu_ratio:.2f}x); load average {r_ours['load_avg']:.1f}-{r_ours['load_avg_end']:.1f} "
                f"(driftloop), {r_raw['load_avg']:.1f}-{r_raw['load_avg_end']:.1f} (raw)",
                flush=True,
            )
            results[backend] = {"driftloop": r_ours, "raw": r_raw, "ratio": ratio, "cpu_ratio": cpu_ratio}
        if a.json:
            a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
