"""The gate's evidence where the MLflow UI shows it: metrics on the cycle run, tags and a
description on the registry version (read by the dashboards and the UI's comparison view).

    >>> record_gate(tracker, cycle_run_id, "4", verdict)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from driftloop.core import tags as T
from driftloop.core.types import Decision
from driftloop.tracking.keys import BAD_KEY as _BAD_KEY

if TYPE_CHECKING:
    from driftloop.tracking import Tracker


def record_gate(tr: Tracker, run_id: str, version: str, verdict: Decision) -> dict[str, str]:
    """Put the gate's key figures where the MLflow UI shows them; returns the version tags set.

    On the cycle run `run_id`: metrics `gate/<suite>/diff` (the challenger's improvement in
    the metric's units, positive is better), `.../ci_low`, `.../ci_high`, `.../p_value` (so
    Compare lines cycles up side by side) and tags
    `driftloop.challenger_version`, `driftloop.gate.verdict`. On registry version
    `version`: one tag per suite (`driftloop.gate.<suite>`: diff, CI, n, p, pass/fail),
    the verdict, the cycle run and its UI path, and a description that starts
    "Promoted by the gate:" or "Rejected by the gate:" followed by the reasons.
    """
    metrics: dict[str, float] = {}
    tags = {
        T.GATE_VERDICT: verdict.action.value,
        T.CYCLE_RUN: run_id,
        T.CYCLE_RUN_URL: tr.run_url(run_id),
        T.POLICY_VERSION: verdict.policy_version,
    }
    for f in verdict.findings:
        suite = f.segment.get("suite")
        if suite is None:
            continue
        suite = _BAD_KEY.sub("_", suite)
        if f.kind not in ("gain", "non_inferiority"):
            tags[T.gate_suite(suite)] = f"no verdict: {f.kind.replace('_', ' ')}"
            continue
        metrics.update(
            {
                f"gate/{suite}/diff": f.estimate,
                f"gate/{suite}/ci_low": f.ci_low,
                f"gate/{suite}/ci_high": f.ci_high,
                f"gate/{suite}/n": f.n,
                f"gate/{suite}/p_value": f.p_value,
            }
        )
        ci = f" [{f.ci_low:+.3f}, {f.ci_high:+.3f}]" if f.ci_low is not None and f.ci_high is not None else ""
        better = (
            ""
            if f.direction == "higher" and f.target is None
            else (f" (target {f.target:g})" if f.target is not None else " (lower is better)")
        )
        tags[T.gate_suite(suite)] = (
            f"{f.role} {f.metric}{better}: {'diff' if not better else 'improvement'} "
            f"{f.estimate:+.3f}{ci}, "
            f"n={f.n}, p={f.p_value:.4g}, {'pass' if f.passed else 'fail'}"
        )
    tr.log_metrics(run_id, metrics)
    tr.set_tags(run_id, {T.CHALLENGER_VERSION: version, T.GATE_VERDICT: verdict.action.value})
    tr.set_version_tags(version, tags)
    head = "Promoted by the gate: " if verdict.action.value == "promote" else "Rejected by the gate: "
    tr.set_version_description(version, head + " | ".join(verdict.reasons))
    return tags
