"""Promotion by hand: promote, rollback and history against MLflow's registry on a temporary store."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.app.cli import main
from driftloop.core.config import load_config
from driftloop.store import Store
from driftloop.tracking import Tracker


@pytest.fixture
def registry(tmp_path: Path):
    cfg_path = tmp_path / "driftloop.yaml"
    cfg_path.write_text("project: hand\nstate_dir: st\n")
    cfg = load_config(cfg_path, env={}, check_files=False)
    tr = Tracker.from_config(cfg)
    versions = []
    for k in range(3):
        model = tmp_path / f"m{k}"
        model.mkdir()
        (model / "weights.txt").write_text(str(k))
        run = tr.start_run(f"register-{k}")
        versions.append(tr.register_model(run, model))
        tr.end_run(run)
    tr.move_champion(versions[0], by="driftloop", reason="base", how="initial")
    return cfg_path, cfg, tr, versions


def test_promote_rollback_and_history(registry, capsys):
    cfg_path, cfg, tr, (v1, v2, v3) = registry
    assert main(["--config", str(cfg_path), "promote", v3, "--reason", "hotfix for billing", "--by", "ana"]) == 0
    assert tr.alias_version("champion") == v3
    st = Store(cfg.store_url).get_state("hand")
    assert st["state"] == "cooldown" and "manual of version 3 by ana: hotfix for billing" in st["reason"]

    assert main(["--config", str(cfg_path), "rollback", "--reason", "canary complaints", "--by", "bo"]) == 0
    assert tr.alias_version("champion") == v1  # the champion that version 3 replaced

    hist = tr.champion_history()
    assert [(h["version"], h["previous"], h["how"], h["by"]) for h in hist] == [
        (v1, v3, "rollback", "bo"),
        (v3, v1, "manual", "ana"),
        (v1, "", "initial", "driftloop"),
    ]
    capsys.readouterr()
    assert main(["--config", str(cfg_path), "history"]) == 0
    out = capsys.readouterr().out
    assert "canary complaints" in out and "hotfix for billing" in out


def test_bad_requests_exit_2_and_change_nothing(registry, capsys):
    cfg_path, cfg, tr, (v1, _, _) = registry
    assert main(["--config", str(cfg_path), "promote", "99", "--reason", "x"]) == 2
    assert "version 99: no such version" in capsys.readouterr().err
    assert tr.alias_version("champion") == v1
    # The initial champion replaced nothing: there is nothing to roll back to.
    assert main(["--config", str(cfg_path), "rollback", "--reason", "x"]) == 2
    assert "no earlier champion is recorded" in capsys.readouterr().err
    assert tr.alias_version("champion") == v1


def test_refused_while_a_cycle_holds_the_loop(registry, capsys):
    cfg_path, cfg, tr, (v1, v2, _) = registry
    store = Store(cfg.store_url)
    store.migrate()
    assert store.begin_retrain("hand", "cycle-1", "a cycle is training", {}, lease_seconds=600)
    assert main(["--config", str(cfg_path), "promote", v2, "--reason", "x"]) == 2
    assert "a cycle holds the loop (state retraining" in capsys.readouterr().err
    assert tr.alias_version("champion") == v1
