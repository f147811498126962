"""Config loading: precedence, errors that name the key path, file checks, CLI exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from driftloop.app.cli import main
from driftloop.core.config import load_config
from driftloop.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "driftloop.yaml"
    p.write_text(text)
    return p


def test_repo_default_config_loads():
    cfg = load_config(REPO / "driftloop.yaml", env={}, check_files=False)
    assert cfg.model.base == "demo"
    assert set(cfg.benchmark.suites) == {"golden", "preference", "canary"}
    assert cfg.store_url == f"sqlite:///{REPO / '.driftloop' / 'store.db'}"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("polcy:\n  alpha: 0.1\n", "polcy: unknown key"),
        ("policy:\n  alpa: 0.1\n", "policy.alpa: unknown key"),
        ("policy:\n  alpha: lots\n", "policy.alpha: Input should be a valid number"),
        ("policy:\n  alpha: 1.5\n", "policy.alpha: Input should be less than 1"),
        ("retrain:\n  lora_r: zero\n", "retrain.lora_r: Input should be a valid integer"),
        ("retrain:\n  lora_r: 0\n", "retrain: Value error, lora_r: must be >= 1, got 0"),
        ("retrain:\n  lora: {r: 8}\n", "retrain.lora: unknown key"),
        ("benchmark:\n  suites:\n    x:\n      role: judge\n      tasks: []\n", "benchmark.suites.x.role"),
        ("policy:\n  debounce_m: 3\n  debounce_n: 2\n", "debounce_m (3) must not exceed debounce_n (2)"),
        (
            "api:\n  evaluation_heartbeat_seconds: 60\n  evaluation_lost_after_seconds: 30\n",
            "api: evaluation_lost_after_seconds (30) must exceed evaluation_heartbeat_seconds (60)",
        ),
        ("sources:\n  - path: x.jsonl\n    id_namespace: ''\n", "sources.0.files.id_namespace"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("policy: [\n", "not valid YAML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text), env={}, check_files=False)
    msg = str(e.value)
    assert fragment in msg
    assert "\n" not in msg


def test_env_overrides_yaml(tmp_path):
    p = write(tmp_path, "policy:\n  alpha: 0.1\n")
    cfg = load_config(
        p, env={"DRIFTLOOP_POLICY__ALPHA": "0.01", "DRIFTLOOP_STORE__URL": "sqlite:///x.db"}, check_files=False
    )
    assert cfg.policy.alpha == 0.01
    assert cfg.store_url == "sqlite:///x.db"


def test_env_unknown_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"policy.alfa: unknown key"):
        load_config(write(tmp_path, ""), env={"DRIFTLOOP_POLICY__ALFA": "0.01"}, check_files=False)


def test_missing_model_path_and_data_file(tmp_path):
    p = write(tmp_path, "model:\n  base: ./no-such-model\n")
    with pytest.raises(ConfigError, match=r"model.base: model path does not exist"):
        load_config(p, env={})
    p = write(tmp_path, "sources:\n  - path: feedback/*.jsonl\n")
    with pytest.raises(ConfigError, match=r"sources.0.path: no file matches"):
        load_config(p, env={})
    (tmp_path / "feedback").mkdir()
    (tmp_path / "feedback" / "a.jsonl").write_text("")
    assert load_config(p, env={}).source_files() == [tmp_path / "feedback" / "a.jsonl"]


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    cfg = load_config(write(tmp_path, "state_dir: st\n"), env={}, check_files=False)
    assert cfg.state_path == tmp_path / "st"


@pytest.mark.parametrize(
    "text",
    [
        "polcy: {}\n",
        "policy:\n  alpha: lots\n",
        "model:\n  base: ./missing-model\n",
        "sources:\n  - path: nothing/*.jsonl\n",
    ],
)
def test_cli_bad_config_exits_2_and_writes_nothing(tmp_path, text, capsys):
    p = write(tmp_path, text)
    before = sorted(tmp_path.rglob("*"))
    code = main(["--config", str(p), "loop"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("driftloop: error: ") and "\n" not in err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("text", ["polcy: {}\n", "model:\n  base: ./missing-model\n"])
def test_cli_demo_bad_config_exits_2_and_writes_nothing(tmp_path, text, capsys):
    p = write(tmp_path, text + "state_dir: st\nsources: [{path: fb/*.jsonl}]\n")
    assert main(["--config", str(p), "demo"]) == 2
    assert capsys.readouterr().err.startswith("driftloop: error: ")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["driftloop.yaml"]


def test_cli_process_exit_code(tmp_path):
    p = write(tmp_path, "polcy: {}\n")
    r = subprocess.run(
        [sys.executable, "-m", "driftloop.app.cli", "--config", str(p), "validate"], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert r.stderr.strip().endswith("polcy: unknown key")


def test_validate_checks_config_tasks_and_prefect_yaml(tmp_path, capsys, monkeypatch):
    (tmp_path / "fb").mkdir()
    (tmp_path / "fb" / "x.jsonl").write_text("")
    p = write(tmp_path, "sources:\n  - path: fb/*.jsonl\n")
    monkeypatch.chdir(REPO)
    assert main(["--config", str(p), "validate"]) == 0
    out = capsys.readouterr().out
    assert "lm-eval project tasks: ok (driftloop_canary)" in out
    assert "loop/daily" in out and "retrain/gpu" in out
    bad = write(
        tmp_path,
        "sources:\n  - path: fb/*.jsonl\nbenchmark:\n  suites:\n    c:\n      role: canary\n"
        "      tasks: [{name: driftloop_canery}]\n",
    )
    assert main(["--config", str(bad), "validate"]) == 2
    assert "did you mean driftloop_canary" in capsys.readouterr().err


def test_configuration_reference_page_matches_the_code():
    from driftloop.app.config_doc import END, START, reference_markdown

    page = (REPO / "docs" / "reference" / "configuration.md").read_text(encoding="utf-8")
    documented = page.split(START, 1)[1].split(END, 1)[0].strip()
    assert documented == reference_markdown(), "run: python -m driftloop.app.config_doc --write"


def test_env_values_are_parsed_by_the_type_of_their_field(tmp_path):
    p = write(tmp_path, "policy:\n  alpha: 0.1\n  floors: {mean_rating: 0.5}\n")
    cfg = load_config(
        p,
        check_files=False,
        env={
            "DRIFTLOOP_POLICY__VERSION": "2",  # a string field keeps the string "2"
            "DRIFTLOOP_PROJECT": "2026",
            "DRIFTLOOP_POLICY__ALPHA": "0.01",  # a float
            "DRIFTLOOP_POLICY__MIN_N": "40",  # an int
            "DRIFTLOOP_MONITOR__PROFILE_CACHE": "false",  # a bool
            "DRIFTLOOP_MONITOR__FEATURES": '["a","b"]',  # a list, as JSON
            "DRIFTLOOP_MONITOR__SEGMENT_FIELDS": "[topic, tier]",  # or as YAML
            "DRIFTLOOP_POLICY__FLOORS__THUMBS_UP_RATE": "0.6",  # one key of a mapping, beside the file's
            "DRIFTLOOP_CONFIG": str(p),
            "DRIFTLOOP_LOG_LEVEL": "debug",
            "DRIFTLOOP_HOME": "/srv",  # not config keys
        },
    )
    assert (cfg.policy.version, cfg.project, cfg.policy.alpha, cfg.policy.min_n) == ("2", "2026", 0.01, 40)
    assert cfg.monitor.profile_cache is False
    assert (cfg.monitor.features, cfg.monitor.segment_fields) == (["a", "b"], ["topic", "tier"])
    assert cfg.policy.floors == {"mean_rating": 0.5, "thumbs_up_rate": 0.6}


def test_precedence_is_defaults_then_yaml_then_env_then_overrides(tmp_path):
    p = write(tmp_path, "policy:\n  alpha: 0.1\n  min_n: 50\nstate_dir: st\n")
    env = {"DRIFTLOOP_POLICY__ALPHA": "0.01", "DRIFTLOOP_POLICY__DEBOUNCE_N": "3"}
    cfg = load_config(p, env=env, check_files=False, overrides={"policy": {"debounce_n": 4}})
    assert (cfg.policy.alpha, cfg.policy.min_n, cfg.policy.debounce_n, cfg.policy.cooldown_hours) == (0.01, 50, 4, 0.0)
    assert cfg.state_path == tmp_path / "st"  # relative to the file, whatever the working directory


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"DRIFTLOOP_POLICY__ALPHA": "lots"}, "(+DRIFTLOOP_* env): policy.alpha: Input should be a valid number"),
        ({"DRIFTLOOP_POLCY__ALPHA": "0.1"}, "(+DRIFTLOOP_* env): polcy: unknown key"),
        ({"DRIFTLOOP_BASE_DIR": "/elsewhere"}, "base_dir: unknown key"),
        ({"DRIFTLOOP_MONITOR__FEATURES": "[a, b"}, "DRIFTLOOP_MONITOR__FEATURES: neither JSON nor YAML"),
    ],
)
def test_a_bad_env_value_is_one_line_naming_the_key(tmp_path, env, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, ""), env=env, check_files=False)
    assert fragment in str(e.value) and "\n" not in str(e.value)
