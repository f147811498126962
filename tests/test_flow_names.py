"""Every Prefect flow has a name of its own: deployments, automations and the UI find flows by name."""

from __future__ import annotations

import importlib
from collections import defaultdict
from pathlib import Path

from prefect import Flow

FLOWS = Path(__file__).resolve().parents[1] / "flows"


def flow_names() -> dict[str, list[str]]:
    """Flow name -> the `module:function` of each flow that bears it, over flows/*.py."""
    names: dict[str, list[str]] = defaultdict(list)
    for path in sorted(FLOWS.glob("*.py")):
        module = importlib.import_module(f"flows.{path.stem}")
        for attr, obj in vars(module).items():
            if isinstance(obj, Flow) and obj.__module__ == module.__name__:
                names[obj.name].append(f"{module.__name__}:{attr}")
    return names


def test_flow_names_are_unique():
    names = flow_names()
    assert {"ingest", "monitor", "benchmark", "loop", "evaluate"} <= set(names)
    shared = {n: where for n, where in names.items() if len(where) > 1}
    assert not shared, f"flows sharing a name: {shared}"


def test_the_fine_tune_subflow_is_named_finetune():
    assert flow_names()["finetune"] == ["flows.retrain:retrain"]
