"""Soak: SIGKILL a JSONL ingest at random points, rerun it each time, and check the store ends exactly as one clean run.

Generates `--rows` events with `benchmarks/ingest.py`'s generator (about 1%
malformed or invalid rows, 2% exact duplicates, e-mail addresses and phone
numbers in the texts). For each backend (SQLite; PostgreSQL with `--pg-url`):

1. the reference: one uninterrupted ingest into a fresh store, then a second
   run over it that must add nothing;
2. the soak: into another fresh store, `--kills` SIGKILLs, each at a random
   moment of an ingest process (a new session, as `driftloop ingest` would
   be), the ingest rerun after each; mostly the writer (the process that
   commits), sometimes the parse child it spawns (the writer then goes on in
   threads). Kill times spread over what is left of the file, some during
   start-up. After the last kill, one run to the end;
3. checks: a content hash over the sorted stored events and quarantine rows
   (ingestion times and row numbers aside) equal to the reference's; events
   and quarantine rows counted exactly (the generator's valid unique events,
   the distinct invalid lines); no process of a killed ingest left running
   `ORPHAN_GRACE_S` after the kill (the parse child must notice its writer is
   gone).

Large files are parsed in a child process (`ingest.worker.PROCESS_MIN_BYTES`,
64 MB); the soak lowers that bar (`--process-min-mb`, default 1) so every run
has its parse child to kill and to leave behind. Prints the counts and one
`PASS` or `FAIL` line per backend; exits 1 on any mismatch.

    .venv/bin/python benchmarks/soak_ingest.py --kills 20                   # SQLite, 200,000 rows
    .venv/bin/python benchmarks/soak_ingest.py --kills 20 --only postgresql \\
        --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python benchmarks/soak_ingest.py --smoke                      # 10,000 rows, 3 kills, SQLite
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

ORPHAN_GRACE_S = 15.0  # how long a killed writer's parse child may take to notice and exit
CHILD_SHARE = 0.25  # of the kills that go to the parse child when it is running
START_SHARE = 0.15  # of the kills at a random moment of start-up
POLL_S = 0.02  # how often the checkpoint is looked at while a kill waits for its offset
MAX_WAIT_S = 600.0


def _bench_ingest():
    """benchmarks/ingest.py as a module (its generator and PostgreSQL database helper)."""
    spec = importlib.util.spec_from_file_location("driftloop_bench_ingest", HERE / "ingest.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def invalid_lines(path: Path) -> int:
    """Distinct lines the store must quarantine: not JSON, or a timestamp without a zone (the generator's two kinds)."""
    bad: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                ts = datetime.fromisoformat(json.loads(line)["ts"])
            except (ValueError, KeyError):
                bad.add(line)
                continue
            if ts.tzinfo is None:
                bad.add(line)
    return len(bad)


# ------------------------------------------------------------------ the ingest process
def run_ingest(url: str, path: Path, process_min_bytes: int, batch_lines: int) -> None:
    """One ingest of `path` into `url`, as `driftloop ingest` does it; prints its report as JSON."""
    from driftloop.ingest import ingest_files, worker
    from driftloop.store import Store

    worker.PROCESS_MIN_BYTES = process_min_bytes  # read by worker.process_ok
    worker.HEAD_START_BYTES = min(worker.HEAD_START_BYTES, process_min_bytes // 2)  # the child parses the rest
    store = Store(url)
    store.migrate()
    rep = ingest_files(store, [path], batch_lines=batch_lines)
    print(json.dumps({"read": rep.read, "accepted": rep.accepted, "duplicates": rep.duplicates}), flush=True)


def _ingest_cmd(url: str, path: Path, process_min_bytes: int, batch_lines: int) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--run-ingest",
        url,
        "--input",
        str(path),
        "--process-min-bytes",
        str(process_min_bytes),
        "--batch-lines",
        str(batch_lines),
    ]


# ------------------------------------------------------------------ the store's content
def snapshot(url: str) -> tuple[str, int, int]:
    """(sha256 over the sorted events and quarantine rows, events, quarantine rows), times and row numbers aside."""
    from sqlalchemy import select

    from driftloop.store import Store
    from driftloop.store.models import Feedback, Quarantine

    f, q = Feedback.__table__, Quarantine.__table__
    ev_cols = [c for c in f.c if c.name != "ingested_at"]
    q_cols = [q.c.source, q.c.raw, q.c.field, q.c.reason, q.c.content_id]
    h = hashlib.sha256()
    n_ev = n_q = 0
    with Store(url) as store, store.engine.connect() as conn:
        for row in conn.execute(select(*ev_cols).order_by(f.c.id_namespace, f.c.event_id)):
            h.update(json.dumps(list(row), sort_keys=True, default=str).encode() + b"\n")
            n_ev += 1
        h.update(b"--quarantine--\n")
        for row in conn.execute(select(*q_cols).order_by(q.c.content_id, q.c.raw)):
            h.update(json.dumps(list(row), sort_keys=True, default=str).encode() + b"\n")
            n_q += 1
    return h.hexdigest(), n_ev, n_q


def committed_offset(store, path: Path) -> int:
    """The byte offset of the file's checkpoint in the store (0 before the first commit)."""
    pos = store.get_checkpoint(f"file:{path.resolve()}")
    return int(pos.split(":", 1)[0]) if pos else 0


def _wait(proc: subprocess.Popen, done, until: float) -> bool:
    """Poll until `done()` (True), the process exits or the clock passes `until` (False)."""
    while proc.poll() is None and time.perf_counter() < until:
        if done():
            return True
        time.sleep(POLL_S)
    return False


# ------------------------------------------------------------------ processes
def session_procs(sid: int) -> list:
    """Live (not zombie) processes of session `sid`: an ingest and whatever it started."""
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(p.pid) == sid:
                out.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return out


def parse_child(sid: int, writer_pid: int):
    """The running parse child of the writer `writer_pid`, or None."""
    for p in session_procs(sid):
        try:
            if p.ppid() == writer_pid and "multiprocessing" in " ".join(p.cmdline()):
                return p
        except Exception:
            continue
    return None


def leftovers(sid: int, grace_s: float) -> list[str]:
    """Processes of a killed ingest's session still running after `grace_s`; each is killed and described."""
    deadline = time.monotonic() + grace_s
    while (procs := session_procs(sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    found = []
    for p in procs:
        try:
            found.append(f"pid {p.pid} (parent {p.ppid()}): {' '.join(p.cmdline())[:120]}")
            p.kill()
        except Exception:
            continue
    return found


@dataclass
class SoakResult:
    backend: str
    rows: int
    requested: int  # kills asked for
    kills: int = 0  # kills attempted (fewer where the file was read to its end first)
    landed: int = 0  # of them, on a process still running
    landed_writer: int = 0
    landed_child: int = 0
    mid_data: int = 0  # writer kills after that run had committed at least one block and before the end
    missed: int = 0  # the run ended before its kill time
    runs: int = 0  # ingest processes started (reference aside)
    orphans: list[str] = field(default_factory=list)
    reference_hash: str = ""
    soak_hash: str = ""
    events: tuple[int, int, int] = (0, 0, 0)  # reference, soak, expected
    quarantine: tuple[int, int, int] = (0, 0, 0)
    rerun_added: int = 0  # events a second clean run added to the reference (must be 0)
    wall_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def soak(
    backend: str,
    ref_url: str,
    soak_url: str,
    path: Path,
    rows: int,
    kills: int,
    expected: tuple[int, int],
    rng: random.Random,
    process_min_bytes: int,
    batch_lines: int,
) -> SoakResult:
    """The reference run, the killed and rerun ingests, and the comparison."""
    from driftloop.store import Store

    for u in (ref_url, soak_url):
        with Store(u) as s:
            s.migrate()
    r = SoakResult(backend, rows, kills)
    cmd = functools.partial(_ingest_cmd, path=path, process_min_bytes=process_min_bytes, batch_lines=batch_lines)
    size = path.stat().st_size
    t_wall = time.perf_counter()

    t = time.perf_counter()
    subprocess.run(cmd(ref_url), check=True, capture_output=True)
    full_s = time.perf_counter() - t
    t = time.perf_counter()
    again = subprocess.run(cmd(ref_url), check=True, capture_output=True, text=True)
    startup_s = time.perf_counter() - t  # a run with nothing left to read: start-up and shut-down
    r.rerun_added = json.loads(again.stdout.strip().splitlines()[-1])["accepted"]
    block_s = max(full_s - startup_s, 0.5) / max(rows / batch_lines, 1)  # about one block's write
    poll = Store(soak_url)
    print(f"{backend}: reference run {full_s:.1f} s, a run with nothing to read {startup_s:.1f} s", flush=True)

    left = kills
    while left > 0:
        start_offset = committed_offset(poll, path)
        if start_offset >= size:
            break
        errors = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            cmd(soak_url),
            start_new_session=True,  # its own session: whatever it starts is found by the session id
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        r.runs += 1
        t_run = time.perf_counter()
        started = False  # a kill of the parse child came before: no start-up left to wait for
        writer_dead = False
        while left > 0 and not writer_dead:
            if not started and rng.random() < START_SHARE:
                # During start-up or the first block: a random moment of a clean run's start-up.
                _wait(proc, lambda: False, t_run + rng.uniform(0, startup_s))
            else:
                # Once the checkpoint passes a random offset, spread over the data left (each kill
                # about its share), then a random moment inside the next block.
                now_at = committed_offset(poll, path)
                target = now_at + rng.uniform(0, (size - now_at) / (left + 1))  # leaves data for the kills after
                if _wait(proc, lambda t=target: committed_offset(poll, path) >= t, time.perf_counter() + MAX_WAIT_S):
                    _wait(proc, lambda: False, time.perf_counter() + rng.uniform(0, block_s))
            left -= 1
            if proc.poll() is not None:
                r.missed += 1
                writer_dead = True
                break
            child = parse_child(proc.pid, proc.pid)
            if child is not None and rng.random() < CHILD_SHARE:
                try:
                    child.send_signal(signal.SIGKILL)
                    r.landed += 1
                    r.landed_child += 1
                except Exception:
                    r.missed += 1
                started = True
                continue  # the writer goes on in threads; its own kill comes next
            offset_before = committed_offset(poll, path)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            writer_dead = True
            r.landed += 1
            r.landed_writer += 1
            if start_offset < offset_before < size:
                r.mid_data += 1
            r.orphans += leftovers(proc.pid, ORPHAN_GRACE_S)
            print(
                f"{backend}: kill {kills - left}/{kills}: writer at {offset_before / size:.0%} of the file"
                + (f", {len(r.orphans)} orphan(s) so far" if r.orphans else ""),
                flush=True,
            )
        proc.wait()
        if proc.returncode not in (0, -signal.SIGKILL):
            errors.seek(0)
            r.problems.append(
                f"an ingest run exited {proc.returncode}: {errors.read().decode(errors='replace')[-500:]}"
            )
        errors.close()
    r.kills = kills - left
    final = subprocess.run(cmd(soak_url), capture_output=True, text=True)
    r.runs += 1
    if final.returncode != 0:
        r.problems.append(f"the last run exited {final.returncode}: {final.stderr[-500:]}")

    r.reference_hash, ref_ev, ref_q = snapshot(ref_url)
    r.soak_hash, soak_ev, soak_q = snapshot(soak_url)
    r.events = (ref_ev, soak_ev, expected[0])
    r.quarantine = (ref_q, soak_q, expected[1])
    r.wall_s = time.perf_counter() - t_wall
    if r.reference_hash != r.soak_hash:
        r.problems.append("stored content differs from the uninterrupted run's")
    if len(set(r.events)) != 1:
        r.problems.append(f"events (reference, soak, expected) = {r.events}")
    if len(set(r.quarantine)) != 1:
        r.problems.append(f"quarantine rows (reference, soak, expected) = {r.quarantine}")
    if r.rerun_added:
        r.problems.append(f"a second clean run added {r.rerun_added} events")
    if r.orphans:
        r.problems.append(f"{len(r.orphans)} process(es) outlived their killed writer: {r.orphans[:3]}")
    if committed_offset(poll, path) != size:
        r.problems.append("the soak store's checkpoint is not at the end of the file")
    poll.close()
    return r


def report(r: SoakResult) -> None:
    print(
        f"{r.backend}: {r.rows:,} rows; kills {r.requested} asked, {r.kills} attempted, {r.landed} landed "
        f"({r.landed_writer} writer, {r.landed_child} parse child; {r.mid_data} writer kills mid-data), "
        f"{r.missed} missed (run already over); {r.runs} ingest runs after the reference"
    )
    print(
        f"{r.backend}: events reference/soak/expected {r.events[0]:,}/{r.events[1]:,}/{r.events[2]:,}; "
        f"quarantine {r.quarantine[0]:,}/{r.quarantine[1]:,}/{r.quarantine[2]:,}; orphans {len(r.orphans)}; "
        f"hash {r.soak_hash[:16]} vs {r.reference_hash[:16]} ({'equal' if r.soak_hash == r.reference_hash else 'DIFFERENT'}); "
        f"wall {r.wall_s:.0f} s"
    )
    print(f"{r.backend}: {'PASS' if r.ok else 'FAIL: ' + '; '.join(r.problems)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs per backend")
    ap.add_argument("--seed", type=int, default=0, help="the generator's and the kill times' seed")
    ap.add_argument("--pg-url", help="a PostgreSQL server (SQLAlchemy URL); two databases are created on it")
    ap.add_argument("--only", choices=["sqlite", "postgresql"], help="soak this backend only")
    ap.add_argument("--process-min-mb", type=float, default=1.0, help="parse in a child from this many MB left")
    ap.add_argument("--smoke", action="store_true", help="10,000 rows, 3 kills, SQLite only: a quick check")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--run-ingest", metavar="URL", help=argparse.SUPPRESS)
    ap.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--process-min-bytes", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--batch-lines", type=int, default=2_000, help="rows per commit (ingest's default: 2,000)")
    a = ap.parse_args(argv)
    if a.run_ingest:
        run_ingest(a.run_ingest, a.input, a.process_min_bytes, a.batch_lines)
        return 0
    if a.smoke:
        a.rows, a.kills, a.only = 10_000, 3, "sqlite"
        a.process_min_mb, a.batch_lines = 0.1, 200
    if a.only == "postgresql" and not a.pg_url:
        print("--only postgresql: give the server with --pg-url", file=sys.stderr)
        return 2
    bench = _bench_ingest()
    rng = random.Random(a.seed)
    results: list[SoakResult] = []
    with tempfile.TemporaryDirectory(prefix="driftloop-soak-") as tmp:
        path = Path(tmp) / "events.jsonl"
        gen = bench.generate(path, a.rows, a.seed)
        expected = (gen["valid_unique"], invalid_lines(path))
        print(
            f"generated {a.rows:,} rows ({path.stat().st_size / 1e6:.0f} MB): {expected[0]:,} valid and unique, "
            f"{expected[1]:,} distinct invalid lines",
            flush=True,
        )
        backends: list[tuple[str, str, str]] = []
        if a.only in (None, "sqlite"):
            backends.append(("sqlite", f"sqlite:///{tmp}/reference.db", f"sqlite:///{tmp}/soak.db"))
        if a.pg_url and a.only in (None, "postgresql"):
            backends.append(
                ("postgresql", bench.new_pg_db(a.pg_url, "soak_reference"), bench.new_pg_db(a.pg_url, "soak_run"))
            )
        for name, ref_url, soak_url in backends:
            min_bytes = int(a.process_min_mb * 2**20)
            r = soak(name, ref_url, soak_url, path, a.rows, a.kills, expected, rng, min_bytes, a.batch_lines)
            report(r)
            results.append(r)
    if a.json:
        a.json.write_text(json.dumps([{**asdict(r), "ok": r.ok} for r in results], indent=2))
    ok = all(r.ok for r in results)
    print("soak: PASS" if ok else "soak: FAIL", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
