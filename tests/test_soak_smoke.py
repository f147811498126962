"""benchmarks/soak_ingest.py --smoke: an ingest SIGKILLed and rerun ends as one clean run; its checks can fail."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from driftloop.core.types import FeedbackEvent
from driftloop.store import Batch, Store

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak_ingest.py"


def _soak_module():
    spec = importlib.util.spec_from_file_location("soak_ingest", SOAK)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_the_smoke_soak_passes():
    out = subprocess.run([sys.executable, str(SOAK), "--smoke"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sqlite: PASS" in out.stdout and out.stdout.rstrip().endswith("soak: PASS")
    assert "orphans 0" in out.stdout and "(equal)" in out.stdout


def test_the_content_hash_sees_a_missing_quarantine_row_and_a_changed_event(tmp_path):
    soak = _soak_module()
    event = FeedbackEvent(event_id="e1", ts="2026-11-01T10:00:00+00:00", prompt="hi")
    bad = {"source": "f", "raw": "{", "field": "json", "reason": "not JSON"}
    urls = [f"sqlite:///{tmp_path / n}.db" for n in ("a", "b", "c", "d")]
    for url, events, quarantine in (
        (urls[0], [event], [bad]),
        (urls[1], [event], [bad]),
        (urls[2], [event], []),
        (urls[3], [event.model_copy(update={"prompt": "hello"})], [bad]),
    ):
        with Store(url) as s:
            s.migrate()
            s.write_batch(Batch("f", events, quarantine, id_namespace="files:f"))
    a, b, c, d = (soak.snapshot(u) for u in urls)
    assert a == b and a[1:] == (1, 1)
    assert c[0] != a[0] and c[1:] == (1, 0)
    assert d[0] != a[0] and d[1:] == (1, 1)


def test_a_process_that_outlives_its_killed_parent_is_found_and_ended():
    soak = _soak_module()
    sleeper = "import time; time.sleep(120)"
    code = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {sleeper!r}]); time.sleep(120)"
    parent = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 60
    while len(soak.session_procs(parent.pid)) < 2:  # the parent and its child
        assert time.monotonic() < deadline, "the child did not start"
        time.sleep(0.1)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    found = soak.leftovers(parent.pid, grace_s=0.5)
    assert len(found) == 1 and "time.sleep(120)" in found[0]
    deadline = time.monotonic() + 30
    while soak.session_procs(parent.pid):  # leftovers killed it
        assert time.monotonic() < deadline
        time.sleep(0.1)
