"""Two first commands on a fresh state folder: both processes open MLflow's SQLite tracking store
at the same moment, and neither fails on MLflow creating its tables ("table ... already exists",
"duplicate column name") or on creating the experiment twice.

Real processes: each imports the tracker, says it is ready, waits for the go and then opens the
store, so the two first uses overlap.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import sys, time
from pathlib import Path
from driftloop.tracking import Tracker
folder, me = Path(sys.argv[1]), sys.argv[2]
(folder / f"ready-{me}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
tr = Tracker(f"sqlite:///{folder / 'state' / 'mlflow.db'}", "driftloop", "driftloop-model")
print("experiment", tr.experiment_id)
"""


def test_two_processes_initialise_a_fresh_tracking_store_at_once(tmp_path):
    (tmp_path / "state").mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 240
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline, "the processes did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    (tmp_path / "go").touch()
    results = [p.communicate(timeout=240) for p in procs]
    errors = [err[-600:] for p, (_, err) in zip(procs, results, strict=True) if p.returncode != 0]
    assert not errors, errors
    ids = {out.split()[-1] for out, _ in results}
    assert len(ids) == 1, ids  # one experiment, found by both
    assert Path(tmp_path / "state" / "mlflow.db").exists()
