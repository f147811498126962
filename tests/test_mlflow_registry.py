"""A clean registry: `challenger` names only the candidate under evaluation, a rejected version
carries `driftloop.status=rejected` and no alias, a promoted one `driftloop.status=promoted`."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.core.config import load_config
from driftloop.tracking import Tracker


@pytest.fixture
def tracker(tmp_path: Path) -> Tracker:
    (tmp_path / "driftloop.yaml").write_text("project: clean\nstate_dir: st\n")
    tr = Tracker.from_config(load_config(tmp_path / "driftloop.yaml", env={}, check_files=False))
    for k in range(3):
        model = tmp_path / f"m{k}"
        model.mkdir()
        (model / "weights.txt").write_text(str(k))
        run = tr.start_run(f"register-{k}")
        tr.register_model(run, model)
        tr.end_run(run)
    tr.move_champion("1", by="driftloop", reason="base", how="initial")
    return tr


def status(tr: Tracker, version: str) -> str:
    return tr.version_info(version)["tags"]["driftloop.status"]


def test_a_rejected_candidate_keeps_no_alias(tracker):
    assert status(tracker, "2") == "candidate"
    tracker.set_alias("challenger", "2")
    tracker.set_alias("canary-traffic", "2")  # any alias a person set on the candidate goes too
    tracker.close_candidate("2", promoted=False)
    assert status(tracker, "2") == "rejected"
    assert tracker.version_info("2")["aliases"] == []
    assert tracker.alias_version("challenger") is None and tracker.alias_version("champion") == "1"


def test_a_promoted_candidate_is_champion_and_challenger_is_gone(tracker):
    tracker.set_alias("challenger", "3")
    tracker.move_champion("3", by="gate", reason="better", how="gate")
    tracker.close_candidate("3", promoted=True)
    assert status(tracker, "3") == "promoted" and status(tracker, "1") == "promoted"
    assert tracker.version_info("3")["aliases"] == ["champion"]
    assert tracker.alias_version("challenger") is None


def test_closing_one_candidate_leaves_a_newer_challenger_alone(tracker):
    tracker.set_alias("challenger", "3")  # a newer candidate is already under evaluation
    tracker.close_candidate("2", promoted=False)
    assert tracker.alias_version("challenger") == "3"
