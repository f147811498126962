"""The Evidently dashboard: three monitor passes saved to a workspace, then read back through a
real `evidently ui` on loopback the way its web page does (dashboard, then one data-series
request per panel)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import evidently_ui  # tests/ is on sys.path

from dashboards.evidently_workspace import add_panels, benchmark_figures, figure_labels, panels, save_snapshot
from driftloop.core.config import JudgeSpec, MonitorConfig
from driftloop.core.types import MetricResult
from driftloop.services.judging import judge_figures
from evaluators.judges.estimate import JudgeOutcome, judge_window
from evaluators.monitoring import monitor_frames

BILLING_DROP = [0.0, 0.2, 0.5]  # how far billing's thumbs-up probability falls in windows 1..3
KAPPA = "Judge agreement with the humans (Cohen's kappa) over time"
PPI = "Judged quality: PPI++ estimate vs human-only over time"


def frame(n: int, seed: int, billing_drop: float = 0.0, slow: bool = False) -> pd.DataFrame:
    """A window of n feedback rows over three topics; billing's thumbs-up rate is 0.85 - billing_drop."""
    rng = np.random.default_rng(seed)
    topic = np.array(["billing", "account", "shipping"])[np.arange(n) % 3]
    up = rng.random(n) < np.where(topic == "billing", 0.85 - billing_drop, 0.85)
    return pd.DataFrame(
        {
            "thumbs_up": up,
            "rating": np.where(up, 1.0, 0.25),
            "topic": topic,
            "latency_ms": rng.normal(900 if slow else 300, 40, n),
            "tokens_in": rng.integers(5, 60, n),
            "tokens_out": rng.integers(10, 90, n),
        }
    )


def judged(rated: pd.DataFrame, seed: int, billing_drop: float, n_unrated: int = 900) -> JudgeOutcome:
    """A judge right 90% of the time on the rated window and on `n_unrated` further events with no thumbs."""
    rng = np.random.default_rng(100 + seed)
    topic = np.array(["billing", "account", "shipping"])[np.arange(n_unrated) % 3]
    truth = rng.random(n_unrated) < np.where(topic == "billing", 0.85 - billing_drop, 0.85)
    window = pd.concat(
        [rated[["thumbs_up", "topic"]], pd.DataFrame({"thumbs_up": np.nan, "topic": topic})], ignore_index=True
    )
    good = np.concatenate([rated["thumbs_up"].to_numpy(bool), truth])
    verdict = np.where(rng.random(len(window)) < 0.9, good, ~good).astype(float)
    spec = JudgeSpec(
        name="helpful", rubric="{{ response }}{{ verdict }}", backend={"kind": "reference"}, min_labels=100
    )
    return judge_window(window, pd.Series(verdict, index=window.index), spec, ["topic"])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Three monitor passes (billing worse each time, latency shifted in the last) saved as snapshots,
    each with a judge's kappa and PPI++ estimates (the Judges tab)."""
    ws = tmp_path_factory.mktemp("evidently") / "ws"
    mon = MonitorConfig(segment_fields=["topic"])
    reference = frame(600, 0)
    runs = []
    for i, drop in enumerate(BILLING_DROP):
        current = frame(300, i + 1, drop, slow=i == 2)
        out = monitor_frames(reference, current, mon, min_n=30)
        judge = judged(current, i, drop)
        saved = save_snapshot(
            ws,
            "shop",
            out.drift.snapshot,
            name=f"monitor {i}",
            timestamp=datetime(2026, 1, 1 + i, tzinfo=UTC),
            metadata={"mlflow_run_id": f"run{i}"},
            tags=["monitor"],
            figures=out.current + out.bias + judge_figures([judge.calibration], judge.window),
            judge_panels=True,
        )
        runs.append((saved, out, judge))
    return ws, runs


@pytest.mark.server  # `evidently ui`
def test_evidently_ui_lists_every_panel_and_each_has_a_point_per_monitor_run(workspace):
    ws, runs = workspace
    project_id = runs[0][0].project_id
    with evidently_ui(ws) as (api, projects):
        assert [p["name"] for p in projects if p["id"] == project_id] == ["shop"]
        dash = httpx.get(f"{api}/v2/dashboards/{project_id}", timeout=10).json()
        titles = {p["id"]: p["title"] for p in dash["panels"]}
        assert sorted(titles.values()) == sorted(p.title for _, p in panels(judges=True))
        tabs = {t["title"]: [titles[i] for i in t["panels"]] for t in dash["tabs"]}
        assert tabs == {
            "Drift": ["Drifted columns, last run", "Share of drifted columns over time"],
            "Quality": ["Thumbs-up rate per segment over time", "Mean rating per segment over time"],
            "Bias": ["Largest segment gap over time"],
            "Judges": [KAPPA, PPI],
        }

        series, legends = {}, {}
        for p in dash["panels"]:  # what the web page asks for each panel
            body = {
                "series_filter": [
                    {
                        "tags": v["tags"],
                        "metadata": v["metadata"],
                        "metric": v["metric"],
                        "metric_labels": v["metric_labels"],
                    }
                    for v in p["values"]
                ]
            }
            r = httpx.post(f"{api}/v2/snapshots/{project_id}/data_series_batch", json=body, timeout=30)
            assert r.status_code in (200, 201), r.text
            data = r.json()
            assert [s["metadata"]["mlflow_run_id"] for s in data["sources"]] == ["run0", "run1", "run2"], p["title"]
            series[p["title"]] = {
                s["params"].get("group", s["params"].get("value_type")): s["values"] for s in data["series"]
            }
            # The legend as the page draws it: the filter's template with the series' labels filled in.
            legends[p["title"]] = {
                p["values"][s["filter_index"]]["legend"].replace("{{group}}", s["params"].get("group", "")): s["values"]
                for s in data["series"]
            }
        for title, by_label in series.items():
            assert by_label, f"panel {title!r} has no series"
            assert all(len(v) == 3 and None not in v for v in by_label.values()), (title, by_label)

        # The plotted values are the monitor's own figures, in window order.
        billing = [
            next(m.value for m in out.current if m.label() == "thumbs_up_rate[topic=billing]") for _, out, _ in runs
        ]
        assert series["Thumbs-up rate per segment over time"]["topic=billing"] == pytest.approx(billing)
        assert set(series["Thumbs-up rate per segment over time"]) == {
            "overall",
            "topic=billing",
            "topic=account",
            "topic=shipping",
        }
        gaps = series["Largest segment gap over time"]["gap"]
        assert gaps == pytest.approx([out.bias[0].value for _, out, _ in runs])
        assert gaps[2] > gaps[0] + 0.3  # billing fell 0.5 by the third window
        assert series["Share of drifted columns over time"]["share"][2] > 0  # latency shifted in the third
        # The Judges tab: each run's kappa with its bootstrap interval, and the PPI++ estimate beside the human-only one.
        kappa = [j.calibration.overall for _, _, j in runs]
        assert legends[KAPPA] == {
            "judge=helpful": pytest.approx([a.kappa for a in kappa]),
            "judge=helpful, 95% low": pytest.approx([a.kappa_low for a in kappa]),
            "judge=helpful, 95% high": pytest.approx([a.kappa_high for a in kappa]),
        }
        assert all(a.kappa_low < a.kappa < a.kappa_high and a.kappa > 0.6 for a in kappa)
        ppi = [next(m for m in j.window.estimates if not m.segment) for _, _, j in runs]
        human = [next(m for m in out.current if m.label() == "thumbs_up_rate") for _, out, _ in runs]
        assert legends[PPI]["PPI++ thumbs-up rate"] == pytest.approx([m.value for m in ppi])
        assert legends[PPI]["PPI++ thumbs-up rate, 95% low"] == pytest.approx([m.ci_low for m in ppi])
        assert legends[PPI]["PPI++ thumbs-up rate, 95% high"] == pytest.approx([m.ci_high for m in ppi])
        assert legends[PPI]["human-only thumbs-up rate"] == pytest.approx([m.value for m in human])
        assert legends[PPI]["human-only thumbs-up rate, 95% low"] == pytest.approx([m.ci_low for m in human])
        assert "PPI++ mean rating" not in legends[PPI]  # no judge stands in for the ratings
        # The judged-only events narrow the interval: the estimate is not the human-only figure again.
        assert all(p.ci_high - p.ci_low < h.ci_high - h.ci_low for p, h in zip(ppi, human, strict=True))
        # A run's page (drift report and the figures' widgets) still opens.
        page = httpx.get(f"{api}/projects/{project_id}/{runs[2][0].snapshot_id}/data", timeout=30)
        assert page.status_code == 200 and "latency_ms" in page.text and "segment_gap" in page.text


def test_panels_are_added_once_and_tabs_listing_a_panel_twice_are_repaired(tmp_path):
    from evidently.sdk.panels import line_plot_panel
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(tmp_path))
    proj = ws.create_project("old")
    # An older driftloop added panels one by one; Evidently 0.7 then lists the second one twice.
    first, second = panels()[0][1], panels()[1][1]
    proj.dashboard.add_panel(first, tab="Drift")
    proj.dashboard.add_panel(second, tab="Drift")
    proj.dashboard.add_panel(line_plot_panel("someone's own panel", []), tab="Mine")
    assert [len(t.panels) for t in proj.dashboard.model().tabs] == [3, 1]
    added = add_panels(ws, proj)
    assert added == [p.title for _, p in panels()[2:]]
    model = ws.get_project(proj.id).dashboard.model()
    assert {t.title: len(t.panels) for t in model.tabs} == {"Drift": 2, "Mine": 1, "Quality": 2, "Bias": 1}
    assert add_panels(ws, ws.get_project(proj.id)) == []
    assert len(ws.get_project(proj.id).dashboard.model().panels) == len(panels()) + 1
    # Judges configured later: their tab joins the existing dashboard, once.
    assert add_panels(ws, ws.get_project(proj.id), judges=True) == [KAPPA, PPI]
    model = ws.get_project(proj.id).dashboard.model()
    assert {t.title: len(t.panels) for t in model.tabs}["Judges"] == 2
    assert add_panels(ws, ws.get_project(proj.id), judges=True) == []


@pytest.mark.parametrize(
    "segment, source, labels",
    [
        ({}, "quality", {"field": "overall", "group": "overall"}),
        ({"topic": "billing"}, "quality", {"field": "topic", "group": "topic=billing"}),
        ({"field": "topic", "worst": "billing", "best": "account"}, "bias", {"field": "topic", "group": "gap"}),
        ({"suite": "bbq", "role": "bias"}, "benchmark", {"field": "bias", "group": "bbq"}),
        ({"locale": "de", "tier": "pro"}, "quality", {"field": "locale,tier", "group": "locale=de,tier=pro"}),
    ],
)
def test_figure_labels_keep_a_series_stable_from_run_to_run(segment, source, labels):
    m = MetricResult(name="x", value=0.5, source=source, segment=segment)
    assert figure_labels(m) == {"source": source, "name": "x", **labels}


def test_a_benchmark_only_snapshot_feeds_the_bias_panel(tmp_path):
    bbq = MetricResult(name="bbq/amb_bias_score", value=0.12, source="benchmark")
    canary = MetricResult(name="canary/acc", value=0.9, source="benchmark")
    figs = benchmark_figures({"bbq": [bbq], "canary": [canary]}, {"bbq": "bias", "canary": "canary"})
    saved = save_snapshot(tmp_path, "shop", None, name="benchmark", figures=figs)
    snap = next((tmp_path / saved.project_id / "snapshots").glob(f"{saved.snapshot_id}.json")).read_text()
    assert '"group": "bbq"' in snap and '"field": "bias"' in snap and "0.12" in snap
    with pytest.raises(ValueError, match="neither a snapshot nor any figure"):
        save_snapshot(
            tmp_path, "shop", None, name="empty", figures=[MetricResult(name="x", value=None, source="quality")]
        )


def test_the_champions_benchmark_feeds_the_bias_panel_and_other_models_do_not(
    tmp_path, demo_model, prefect_harness, one_torch_thread
):
    from test_evaluate import make_world

    from flows.benchmark import BenchmarkParams, benchmark

    cfg_path = make_world(tmp_path, demo_model)
    # The canary task stands in for BBQ here: any suite with role `bias` is plotted on the Bias tab.
    cfg_path.write_text(
        cfg_path.read_text()
        .replace("workspace: false", "workspace: true")
        .replace("canary: {role: canary,", "fairness: {role: bias,")
    )
    snapshots = lambda: sorted((tmp_path / "state" / "evidently").glob("*/snapshots/*.json"))  # noqa: E731
    out = benchmark(BenchmarkParams(config=str(cfg_path), model="champion", suites=["fairness"]))
    (snap,) = snapshots()
    text = snap.read_text()
    acc = out.metrics["fairness"][0]
    assert acc.value is not None and '"field": "bias"' in text and '"group": "fairness"' in text
    assert f'"mlflow_run_id": "{out.run_id}"' in text and '"benchmark"' in text
    benchmark(BenchmarkParams(config=str(cfg_path), model="1", suites=["fairness"]))  # the same model by version
    assert snapshots() == [snap]  # only the champion's runs make the series
