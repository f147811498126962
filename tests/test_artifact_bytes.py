"""`benchmarks/artifact_bytes.py --smoke`: the state folder's growth per call and per day with
the old retention behaviour and the recommended settings, on a small local world."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_recommended_retention_writes_fewer_bytes_a_day(tmp_path):
    out = tmp_path / "bytes.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "artifact_bytes.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    data = json.loads(out.read_text())
    before, html_daily, rec = (data["modes"][m] for m in ("before", "html-daily", "recommended"))
    assert before["calls"]["monitor+html"] == 2 and before["calls"]["monitor"] == 0  # always: every run
    for mode in (html_daily, rec):  # once a day without drift
        assert mode["calls"]["monitor+html"] == 1 and mode["calls"]["monitor"] == 1
    assert html_daily["per_call"]["monitor"] < html_daily["per_call"]["monitor+html"] / 3  # the HTML report dominates
    # The run without the report still saves its Evidently snapshot with html-daily, not with the recommended settings.
    assert rec["per_call"]["monitor"] < html_daily["per_call"]["monitor"] / 2
    assert before["per_day"] > html_daily["per_day"] > rec["per_day"] > 0
    assert data["ratios"]["recommended"] > 2 and "bytes per day, before / recommended" in proc.stdout
