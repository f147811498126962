"""The drift evaluator's parts: the spec, the skip rules, typed verdicts from both backends, failures
that leave a note instead of a crash, the module layout, and the registry that `monitor_frames` runs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from test_drift import by_column, window

from driftloop.core.config import MonitorConfig
from driftloop.core.errors import InputError
from driftloop.core.types import MetricResult
from evaluators import drift_profiles, registry
from evaluators.drift import drift_report
from evaluators.drift_spec import ColumnStats, Comparison, DriftSpec
from evaluators.monitoring import monitor_frames

ROOT = Path(__file__).resolve().parents[1]
LARGE = {"exact_rows": 0, "report_rows": 1001}  # force the profile backend on small frames
COLUMNS = ["latency_ms", "prompt_len", "topic", "model_version"]


def test_the_spec_comes_from_the_monitor_section():
    mon = MonitorConfig(
        features=["latency_ms", "topic"],
        segment_fields=["topic", "locale"],
        drift_share_alert=0.3,
        exact_rows=100,
        report_rows=2000,
    )
    spec = DriftSpec.from_monitor(mon, min_n=10)
    assert spec.columns == ["latency_ms", "topic", "locale"]  # features, then segment fields, repeats dropped
    assert (spec.drift_share, spec.min_n, spec.exact_rows, spec.report_rows) == (0.3, 10, 100, 2000)
    assert spec.profiled(60, 41) and not spec.profiled(60, 40)
    assert registry.get("drift").configure(mon, 10) == spec


@pytest.mark.parametrize(
    "stats, reason",
    [
        ({"missing_from": ["current"]}, "skipped: column missing from the current window"),
        ({"missing_from": ["reference", "current"]}, "skipped: column missing from both windows"),
        ({"n_reference": 0, "n_current": 5}, "insufficient data (n=0): all values are null in the reference window"),
        (
            {"n_reference": 40, "n_current": 12},
            "insufficient data (n=12): non-null values reference=40, current=12, need 30 each",
        ),
        (
            {"kind_current": "categorical"},
            "skipped: column is numerical in the reference window and categorical in the current one",
        ),
        ({"distinct": [3.0]}, "skipped: one distinct value (3.0) in both windows, so drift is undefined"),
        ({}, ""),
    ],
)
def test_the_skip_rules_and_their_wording(stats, reason):
    base = {
        "column": "x",
        "kind_reference": "numerical",
        "kind_current": "numerical",
        "n_reference": 40,
        "n_current": 40,
        "distinct": [1.0, 2.0],
    }
    assert ColumnStats(**{**base, **stats}).skip_reason(min_n=30) == reason


def _check_verdicts_match_metrics(out) -> None:
    metrics = by_column(out)
    assert [v.column for v in out.verdicts] == list(metrics)
    for v in out.verdicts:
        m = metrics[v.column]
        if v.skipped is not None:
            assert v.drifted is None and m.value is None and m.note == v.skipped
            continue
        assert (m.value, m.threshold, m.passed) == (v.score, v.threshold, not v.drifted)
        assert m.direction == ("higher" if v.score_kind == "p_value" else "lower")
        assert out.summary["columns"][v.column]["score_is_p_value"] is v.score_is_p_value


def test_both_backends_give_the_same_typed_verdicts():
    ref, cur = window(1500, 1).assign(model_version="3"), window(1200, 2, latency_shift=40)
    exact = drift_report(ref, cur, COLUMNS, exact_rows=10**9)
    large = drift_report(ref, cur, COLUMNS, **LARGE)
    for out in (exact, large):
        _check_verdicts_match_metrics(out)
    for e, g in zip(exact.verdicts, large.verdicts):
        assert (e.column, e.kind, e.score_kind, e.drifted, e.skipped, e.n_reference, e.n_current) == (
            g.column,
            g.kind,
            g.score_kind,
            g.drifted,
            g.skipped,
            g.n_reference,
            g.n_current,
        )
    lat = {v.column: v for v in large.verdicts}["latency_ms"]
    assert lat.kind == "numerical" and lat.method == "wasserstein" and lat.drifted is True
    assert lat.n_reference == int(ref["latency_ms"].notna().sum()) and lat.error_bound == 0.0
    assert {v.column: v for v in exact.verdicts}["latency_ms"].error_bound is None
    assert {v.column: v for v in exact.verdicts}["model_version"].skipped.startswith("skipped: one distinct value")


def test_an_evidently_failure_skips_the_compared_columns_with_the_reason(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no report today\nsecond line")

    monkeypatch.setattr("evaluators.drift_evidently._run", broken)
    out = drift_report(window(600, 1), window(300, 2), ["latency_ms", "topic"])
    assert out.summary["error"] == "RuntimeError: no report today"
    assert all(v.skipped == "skipped: Evidently failed (RuntimeError: no report today)" for v in out.verdicts)
    assert [(m.value, m.passed) for m in out.metrics] == [(None, None)] * 3
    assert out.metrics[-1].note == "insufficient data: no column could be compared"
    assert out.snapshot is None and "Evidently failed" in out.html


def test_a_failed_sample_page_keeps_the_full_data_verdicts(monkeypatch):
    real = drift_profiles.evidently_report

    def page_fails(ref, cur, kinds, drift_share, methods=None):
        if methods:  # only the sample page pins methods
            return Comparison(failed={c: "x" for c in kinds}, error="ValueError: no page")
        return real(ref, cur, kinds, drift_share, methods)

    monkeypatch.setattr(drift_profiles, "evidently_report", page_fails)
    out = drift_report(window(1500, 1), window(1200, 2, latency_shift=40), ["latency_ms", "topic"], **LARGE)
    assert out.summary["error"] == "report page: ValueError: no page"
    assert [m.passed for m in out.metrics] == [False, True, False]
    assert out.snapshot is None and out.html.startswith("<!DOCTYPE html>")


def _imports(module: Path) -> set[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    found = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return found | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


def test_the_backends_and_the_spec_never_import_the_assembler():
    for name in ("drift_spec", "drift_evidently", "drift_profiles", "profiles"):
        assert "evaluators.drift" not in _imports(ROOT / "evaluators" / f"{name}.py"), name
    assert "evaluators.drift_evidently" not in _imports(ROOT / "evaluators" / "drift_spec.py")


def test_listing_the_registry_does_not_import_evidently():
    code = "import sys, evaluators.registry as r; r.names(); print('evidently' in sys.modules)"
    got = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "False"


def test_monitor_frames_runs_what_the_registry_holds(monkeypatch):
    seen = []

    def fake_gaps(spec: registry.SegmentGapsSpec, inputs: registry.Inputs) -> registry.Figures:
        seen.append((spec.segment_fields, spec.min_n, len(inputs.need("current"))))
        return registry.Figures(metrics=[MetricResult(name="segment_gap", value=0.0, source="quality")])

    fake = registry.Evaluator("segment_gaps", registry.SegmentGapsSpec, fake_gaps)
    monkeypatch.setitem(registry._REGISTRY, "segment_gaps", fake)
    mon = MonitorConfig(features=["latency_ms"], segment_fields=["topic"])
    out = monitor_frames(window(400, 1), window(300, 2), mon, min_n=20)
    assert seen == [(["topic"], 20, 300)]
    assert [m.name for m in out.bias] == ["segment_gap"]
    assert [m.label() for m in out.drift.metrics] == [
        "drift_score[column=latency_ms]",
        "drift_score[column=topic]",
        "drifted_share",
    ]
    assert set(out.seconds) == {"quality_reference", "drift", "quality_current", "total"}


def test_registry_names_close_matches_and_spec_fields_override_from_the_context():
    with pytest.raises(InputError, match="did you mean 'drift'"):
        registry.get("drfit")
    spec = registry.get("segment_gaps").configure(MonitorConfig(segment_fields=["topic"]), 10, gap_metric="rating")
    assert (spec.segment_fields, spec.gap_metric, spec.min_n) == (["topic"], "rating", 10)
    with pytest.raises(InputError, match="no 'reference'"):
        registry.get("drift")({"current": window(10, 1)})
