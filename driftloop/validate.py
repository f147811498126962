"""`driftloop validate`: the config, the lm-eval tasks it names, and prefect.yaml.

Returns the lines to print; raises ConfigError (exit 2) at the first problem,
with a message naming the key, task or deployment at fault. Writes nothing.

    >>> for line in validate("driftloop.yaml"): print(line)
    config driftloop.yaml: ok (2 suites, 1 source)
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path

import yaml

from driftloop.config import Config, load_config
from driftloop.errors import ConfigError, DriftloopError


def _tasks(cfg: Config) -> list[str]:
    from evaluators.benchmark import make_task_manager
    from evaluators.tasks import TASKS_DIR

    lines = []
    project = {t.name for s in cfg.benchmark.suites.values() for t in s.tasks if t.kind == "project"}
    builtin = {t.name for s in cfg.benchmark.suites.values() for t in s.tasks if t.kind == "builtin"}
    if project:
        dirs = [TASKS_DIR] + [cfg.path(d) for d in cfg.benchmark.task_dirs]
        known = set(make_task_manager(dirs).all_tasks)
        for name in sorted(project):
            if name not in known:
                near = difflib.get_close_matches(name, sorted(known), n=3)
                hint = f"; did you mean {', '.join(near)}?" if near else ""
                raise ConfigError(f"benchmark: task {name!r} is not in {TASKS_DIR}{hint}")
        lines.append(f"lm-eval project tasks: ok ({', '.join(sorted(project))})")
    if builtin:
        from evaluators.builtin import builtin_task_dir

        for name in sorted(builtin):
            try:
                builtin_task_dir(name)  # one folder's lookup, not lm-eval's ~14,000-file index
            except DriftloopError as e:
                raise ConfigError(f"benchmark: built-in task {name!r}: {e}") from None
        lines.append(f"lm-eval built-in tasks: ok ({', '.join(sorted(builtin))})")
    return lines


def _prefect(path: Path, cfg: Config | None = None) -> list[str]:
    if not path.exists():
        raise ConfigError(f"{path}: not found")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML") from None
    deployments = (doc or {}).get("deployments") or []
    if not deployments:
        raise ConfigError(f"{path}: deployments: none declared")
    root = path.resolve().parent
    names, regression = [], []
    for i, d in enumerate(deployments):
        where = f"{path}: deployments.{i}"
        entry = d.get("entrypoint", "")
        mod, _, func = entry.partition(":")
        if mod.endswith(".py"):
            # Prefect puts a file entrypoint's folder first on sys.path, where flows/retrain.py
            # would shadow the `retrain` package on the worker.
            raise ConfigError(f"{where}.entrypoint: {entry!r} is a file path; use the module form "
                              f"{mod[:-3].replace('/', '.')}:{func or 'FLOW'}")
        if not func or not (root / (mod.replace(".", "/") + ".py")).is_file():
            raise ConfigError(f"{where}.entrypoint: {entry!r} does not name PACKAGE.MODULE:FLOW in this repository")
        module = importlib.import_module(mod)
        fl = getattr(module, func, None)
        if fl is None or not hasattr(fl, "fn"):
            raise ConfigError(f"{where}.entrypoint: {func!r} is not a Prefect flow in {mod}")
        params = d.get("parameters") or {}
        try:
            fl.validate_parameters(params)
        except Exception as e:  # prefect raises ParameterTypeError with pydantic's message
            raise ConfigError(f"{where}.parameters: {str(e).splitlines()[0]}") from None
        if not (d.get("work_pool") or {}).get("name"):
            raise ConfigError(f"{where}.work_pool.name: missing")
        regression += _triggers(where, d.get("triggers") or [], fl)
        names.append(f"{fl.name}/{d.get('name')}")
    lines = [f"prefect.yaml: ok ({', '.join(names)})"]
    if cfg is not None and cfg.policy.retrain_via == "event":
        lines.append(_event_mode(path, cfg, regression))
    return lines


def _triggers(where: str, triggers: list, fl) -> list[tuple[str, float]]:
    """Check each deployment trigger with Prefect's own model; return (where, within seconds) of
    those that react to the regression event."""
    from flows.events import REGRESSION_EVENT, check_trigger

    found = []
    for j, t in enumerate(triggers):
        at = f"{where}.triggers.{j}"
        try:
            trig = check_trigger(t)
        except ValueError as e:
            raise ConfigError(f"{at}: {str(e).splitlines()[0]}") from None
        unknown = sorted(set(trig.parameters or {}) - set(fl.parameters.properties))
        if unknown:
            raise ConfigError(f"{at}.parameters: {', '.join(unknown)} not a parameter of flow {fl.name!r}")
        if REGRESSION_EVENT in getattr(trig, "expect", ()):
            found.append((at, trig.within.total_seconds()))
    return found


def _event_mode(path: Path, cfg: Config, regression: list[tuple[str, float]]) -> str:
    """With policy.retrain_via = event, an automation must run the retrain, and its
    no-double-fire window must not outlast the cooldown (it would drop a legitimate trigger)."""
    if not regression:
        raise ConfigError(f"{path}: policy.retrain_via is 'event' but no deployment trigger expects "
                          "driftloop.regression.detected; nothing would run the retrain")
    cooldown = cfg.policy.cooldown_hours * 3600
    for at, within in regression:
        if within > cooldown:
            raise ConfigError(f"{at}.within: {within:g} s is longer than policy.cooldown_hours "
                              f"({cfg.policy.cooldown_hours:g} h = {cooldown:g} s); a regression reported after "
                              "the cooldown but inside that window would be dropped")
    return f"event-driven retrain: ok ({len(regression)} automation(s) on driftloop.regression.detected)"


def validate(config: str | None = None) -> list[str]:
    """Check everything `driftloop loop` would need; return the report lines."""
    cfg = load_config(config, check_files=True)
    lines = [f"config {config or 'driftloop.yaml'}: ok ({len(cfg.benchmark.suites)} suites, {len(cfg.sources)} source(s))"]
    lines += _tasks(cfg)
    beside = cfg.base_dir / "prefect.yaml"
    lines += _prefect(beside if beside.exists() else Path.cwd() / "prefect.yaml", cfg)
    return lines
