"""`driftloop validate`: the config, the lm-eval tasks it names and their metrics, the judges (model folders, keys, endpoints), and prefect.yaml.

Returns the lines to print; raises ConfigError (exit 2) at the first problem,
with a message naming the key, task or deployment at fault. Writes nothing
(the golden task's template is written to a temporary folder and removed).
Runs no model: a task's metrics are read from its lm-eval YAML, as lm-eval
itself declares them (`metric_list`, else the defaults of its output type).

prefect.yaml is checked where one is given (`--prefect`), else the one beside
the config, else the one in the working directory; with none, validation
says it was not checked, so a config kept outside the checkout validates
from anywhere.

    >>> for line in validate("driftloop.yaml"): print(line)
    config driftloop.yaml: ok (2 suites, 1 source)
"""

from __future__ import annotations

import difflib
import functools
import importlib
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from driftloop.core.config import Config, load_config
from driftloop.core.errors import ConfigError, DriftloopError


def _tasks(cfg: Config, origin: str) -> list[str]:
    from evaluators.benchmark import make_task_manager
    from evaluators.tasks import TASKS_DIR

    lines = []
    specs = [(name, j, t) for name, s in cfg.benchmark.suites.items() for j, t in enumerate(s.tasks)]
    project = {t.name for _, _, t in specs if t.kind == "project"}
    builtin = {t.name for _, _, t in specs if t.kind == "builtin"}
    index: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, name) -> lm-eval's index that defines it
    if project:
        dirs = [TASKS_DIR] + [cfg.path(d) for d in cfg.benchmark.task_dirs]
        tm = make_task_manager(dirs)
        known = set(tm.all_tasks)
        for name in sorted(project):
            if name not in known:
                near = difflib.get_close_matches(name, sorted(known), n=3)
                hint = f"; did you mean {', '.join(near)}?" if near else ""
                raise ConfigError(f"benchmark: task {name!r} is not in {TASKS_DIR}{hint}")
            index["project", name] = tm.task_index
        lines.append(f"lm-eval project tasks: ok ({', '.join(sorted(project))})")
    if builtin:
        from evaluators.builtin import builtin_task_dir

        for name in sorted(builtin):
            try:
                folder = builtin_task_dir(name)  # one folder's lookup, not lm-eval's ~14,000-file index
            except DriftloopError as e:
                raise ConfigError(f"benchmark: built-in task {name!r}: {e}") from None
            index["builtin", name] = make_task_manager([folder]).task_index
        lines.append(f"lm-eval built-in tasks: ok ({', '.join(sorted(builtin))})")
    unchecked = set()
    for suite, j, spec in specs:
        if spec.kind in ("golden", "preference"):
            declared = _golden_metrics()[spec.kind]
        else:
            declared = _declared(index[spec.kind, spec.name], spec.name)
        if declared is None:  # a Python-defined task: its metrics are known only once it is built
            unchecked.add(spec.name)
            continue
        for task, metrics in declared.items():
            if spec.metric not in metrics:
                sub = f" (subtask {task!r})" if task != spec.name else ""
                raise ConfigError(
                    f"{origin}: benchmark.suites.{suite}.tasks.{j}.metric: task {spec.name!r}{sub} "
                    f"has no metric {spec.metric!r} (it has: {', '.join(sorted(metrics))})"
                )
    if specs:
        skipped = f"; not checkable before a run: {', '.join(sorted(unchecked))}" if unchecked else ""
        lines.append(f"metrics of record: ok ({len(specs) - len(unchecked)} tasks{skipped})")
    return lines


def _declared(index: dict[str, Any], name: str, seen: frozenset[str] = frozenset()) -> dict[str, set[str]] | None:
    """{leaf task: the metrics its config declares} for a task, group or tag of an lm-eval index.

    These are the keys of the built task's `higher_is_better()`, which the
    benchmark checks the metric of record against. None where a leaf is a
    Python class (its metrics exist only once built); a subtask outside the
    indexed folder is left out.
    """
    from lm_eval.tasks._index import Kind

    entry = index.get(name)
    if entry is None or name in seen:
        return {}
    if entry.kind is Kind.TASK:
        return {name: _metric_names(entry.cfg or {})}
    if entry.kind is Kind.PY_TASK:
        return None
    if entry.kind is Kind.TAG:
        members = [n for n, e in index.items() if name in e.tags and e.kind is not Kind.TAG]
    else:
        items = (entry.cfg or {}).get("task") or []
        members = [x if isinstance(x, str) else x.get("task") for x in (items if isinstance(items, list) else [items])]
    out: dict[str, set[str]] = {}
    for member in members:
        if isinstance(member, str):
            part = _declared(index, member, seen | {name})
            if part is None:
                return None
            out.update(part)
    return out


def _metric_names(task_cfg: dict[str, Any]) -> set[str]:
    """The metric names lm-eval gives a task config: its `metric_list`, else its output type's defaults."""
    from lm_eval.api.registry import DEFAULT_METRIC_REGISTRY

    listed = task_cfg.get("metric_list")
    if not listed:
        return set(DEFAULT_METRIC_REGISTRY.get(task_cfg.get("output_type") or "generate_until", []))
    names = {str(m.get("metric")) for m in listed if isinstance(m, dict)}
    # An unresolved `!function module.fn` reads as the path `<folder>/module.fn`; lm-eval names that metric fn.
    return {n.rsplit(".", 1)[-1] if "/" in n else n for n in names}


@functools.cache
def _golden_metrics() -> dict[str, dict[str, set[str]]]:
    """kind -> {task: metrics} of the generated tasks, from the YAML that `write_golden_task` and
    `write_preference_task` write (stand-in items)."""
    from evaluators.golden import TASK_NAME, write_golden_task
    from evaluators.preference_task import PREFERENCE_TASK, write_preference_task

    items = [{"item_id": "a", "prompt": "p", "answer": "x"}, {"item_id": "b", "prompt": "q", "answer": "y"}]
    pairs = [{"item_id": "a", "prompt": "p", "chosen": "x", "rejected": "y"}]
    with tempfile.TemporaryDirectory(prefix="driftloop-validate-") as tmp:
        golden = write_golden_task(items, Path(tmp), num_choices=2)
        pref = write_preference_task(pairs, Path(tmp))

        def read(task) -> set[str]:
            return _metric_names(yaml.safe_load(task.yaml_path.read_text(encoding="utf-8")))

        return {"golden": {TASK_NAME: read(golden)}, "preference": {PREFERENCE_TASK: read(pref)}}


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
            raise ConfigError(
                f"{where}.entrypoint: {entry!r} is a file path; use the module form "
                f"{mod[:-3].replace('/', '.')}:{func or 'FLOW'}"
            )
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
        raise ConfigError(
            f"{path}: policy.retrain_via is 'event' but no deployment trigger expects "
            "driftloop.regression.detected; nothing would run the retrain"
        )
    cooldown = cfg.policy.cooldown_hours * 3600
    for at, within in regression:
        if within > cooldown:
            raise ConfigError(
                f"{at}.within: {within:g} s is longer than policy.cooldown_hours "
                f"({cfg.policy.cooldown_hours:g} h = {cooldown:g} s); a regression reported after "
                "the cooldown but inside that window would be dropped"
            )
    return f"event-driven retrain: ok ({len(regression)} automation(s) on driftloop.regression.detected)"


def _judges(cfg: Config) -> list[str]:
    """Each judge builds (its model folder, its API key) and an `openai` judge's endpoint answers."""
    if not cfg.judges:
        return []
    from evaluators.judges.backends import make_judge

    lines = []
    for spec in cfg.judges:
        judge = make_judge(spec, cfg.base_dir)  # ConfigError naming the judge
        check = getattr(judge, "check", None)
        lines.append(check() if check is not None else f"judge {spec.name}: ok ({spec.backend.kind})")
    return lines


def validate(config: str | None = None, prefect: str | None = None) -> list[str]:
    """Check everything `driftloop loop` would need; return the report lines.

    `prefect` names the prefect.yaml to check; without it, the one beside the
    config or else in the working directory is checked, and with neither the
    report says so (the deployments are not needed to run the loop by hand).
    """
    cfg = load_config(config, check_files=True)
    origin = config or os.environ.get("DRIFTLOOP_CONFIG") or "driftloop.yaml"
    lines = [f"config {origin}: ok ({len(cfg.benchmark.suites)} suites, {len(cfg.sources)} source(s))"]
    lines += _tasks(cfg, origin)
    lines += _judges(cfg)
    found = (
        Path(prefect)
        if prefect
        else next((p for p in (cfg.base_dir / "prefect.yaml", Path.cwd() / "prefect.yaml") if p.exists()), None)
    )
    if found is not None:
        return lines + _prefect(found, cfg)
    lines.append("prefect.yaml: not checked (none beside the config or in the working directory; give --prefect)")
    if cfg.policy.retrain_via == "event":
        lines.append("event-driven retrain: not checked (its automation is declared in prefect.yaml)")
    return lines
