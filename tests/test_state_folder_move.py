"""A state folder that moves or is copied reads and writes its own files: MLflow's recorded
artifact paths follow it when the tracker opens it again."""

from __future__ import annotations

import shutil
from pathlib import Path

from driftloop.core.config import load_config
from driftloop.tracking import Tracker
from driftloop.tracking.relocate import moved_from


def _project(root: Path) -> Path:
    root.mkdir()
    (root / "driftloop.yaml").write_text("project: mover\nstate_dir: .driftloop\n")
    return root / "driftloop.yaml"


def _tracker(cfg_path: Path) -> Tracker:
    return Tracker.from_config(load_config(cfg_path, env={}, check_files=False))


def _cycle_like_logging(tr: Tracker, tmp: Path) -> tuple[str, str]:
    model = tmp / "weights"
    model.mkdir()
    (model / "weights.txt").write_text("w1")
    run = tr.start_run("cycle-1", tags={"driftloop.kind": "cycle"})
    tr.log_dict(run, {"outcome": "no action"}, "cycle_summary.json")
    data = tmp / "data.jsonl"
    data.write_text('{"id": "a"}\n')
    tr.log_dataset(run, [{"id": "a"}], "training-set", "training", str(data))
    version = tr.register_model(run, model)
    tr.end_run(run)
    return run, version


def test_a_moved_state_folder_reads_and_writes_under_its_new_path(tmp_path):
    old = _project(tmp_path / "old")
    tr = _tracker(old)
    run, version = _cycle_like_logging(tr, tmp_path)
    old_state = str(old.parent / ".driftloop")

    shutil.move(str(old.parent), str(tmp_path / "new"))
    new = tmp_path / "new" / "driftloop.yaml"
    tr2 = _tracker(new)
    new_state = str(new.parent / ".driftloop")
    assert tr2.client.get_experiment(tr2.experiment_id).artifact_location.startswith(new_state)
    assert tr2.read_json(run, "cycle_summary.json") == {"outcome": "no action"}
    label, folder = tr2.resolve(version)
    assert folder.is_relative_to(new_state) and (folder / "weights.txt").read_text() == "w1"
    assert tr2.client.get_run(run).info.artifact_uri.startswith(new_state)

    run2 = tr2.start_run("cycle-2")
    tr2.log_dict(run2, {"outcome": "moved"}, "cycle_summary.json")
    tr2.end_run(run2)
    assert tr2.client.get_run(run2).info.artifact_uri.startswith(new_state)
    assert tr2.read_json(run2, "cycle_summary.json") == {"outcome": "moved"}
    assert old_state.encode() not in (Path(new_state) / "mlflow.db").read_bytes()  # no path left behind


def test_a_copied_state_folder_writes_its_own_files_and_leaves_the_original_alone(tmp_path):
    orig = _project(tmp_path / "orig")
    run, _ = _cycle_like_logging(_tracker(orig), tmp_path)
    shutil.copytree(orig.parent, tmp_path / "copy")
    copy_tr = _tracker(tmp_path / "copy" / "driftloop.yaml")
    run2 = copy_tr.start_run("cycle-2")
    copy_tr.log_dict(run2, {"outcome": "copy"}, "cycle_summary.json")
    copy_state = tmp_path / "copy" / ".driftloop"
    assert copy_tr.client.get_run(run2).info.artifact_uri.startswith(str(copy_state))
    assert list(copy_state.glob(f"mlartifacts/*/{run2}/artifacts/cycle_summary.json")) or list(
        copy_state.glob(f"mlartifacts/{run2}/artifacts/cycle_summary.json")
    )
    orig_state = tmp_path / "orig" / ".driftloop"
    assert not list(orig_state.rglob(run2))  # nothing of the copy's run was written into the original
    assert _tracker(orig).client.get_run(run).info.artifact_uri.startswith(str(orig_state))


def test_only_a_moved_default_layout_is_rewritten(tmp_path):
    db = f"sqlite:///{tmp_path}/new/.driftloop/mlflow.db"
    root = f"{tmp_path}/new/.driftloop/mlartifacts"
    assert moved_from(db, root, "/srv/old/.driftloop/mlartifacts") == (
        "/srv/old/.driftloop",
        f"{tmp_path}/new/.driftloop",
    )
    assert moved_from(db, root, root) is None  # nothing moved
    assert moved_from(db, root, "/srv/old/elsewhere") is None  # another root by choice, not a move
    assert moved_from(db, "/data/artifacts", "/srv/old/.driftloop/mlartifacts") is None  # not inside the folder
    assert moved_from("postgresql://db/mlflow", root, "/srv/old/.driftloop/mlartifacts") is None
    assert moved_from(db, root, "s3://bucket/mlartifacts") is None
