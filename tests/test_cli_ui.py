"""`driftloop ui`: one unwrapped line per command, with absolute paths, so it can be copied from any folder."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from driftloop.app.cli import main


def test_ui_prints_each_command_on_one_line_with_absolute_paths(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "driftloop.yaml"
    cfg.write_text("project: ui\nmodel: {base: ./model}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "40")  # a narrow terminal: nothing may wrap
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_HOME", raising=False)
    assert main(["--config", str(cfg), "ui"]) == 0
    lines = capsys.readouterr().out.splitlines()
    mlflow_line = next(line for line in lines if "MLflow UI:" in line)
    prefect_line = next(line for line in lines if "Prefect UI:" in line)
    mlflow_cmd = shlex.split(mlflow_line.split("MLflow UI:", 1)[1])
    assert Path(mlflow_cmd[0]).is_absolute() and Path(mlflow_cmd[0]).parent == Path(sys.executable).parent
    assert mlflow_cmd[1:3] == ["ui", "--backend-store-uri"]
    assert mlflow_cmd[3] == f"sqlite:///{(tmp_path / '.driftloop' / 'mlflow.db').resolve()}"
    prefect_cmd = shlex.split(prefect_line.split("Prefect UI:", 1)[1])
    assert prefect_cmd[0] == f"PREFECT_HOME={(tmp_path / '.driftloop' / 'prefect').resolve()}"
    assert Path(prefect_cmd[1]).is_absolute() and prefect_cmd[2:4] == ["server", "start"]
