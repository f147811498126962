"""The Evidently workspace that `evidently ui` shows: one project per driftloop project,
one snapshot per monitor run, and dashboard panels defined here in code.

The workspace is a plain folder (`<state_dir>/evidently` by default); open it with
`evidently ui --workspace <state_dir>/evidently`. Each monitor run adds one snapshot,
stamped with the end of its current window, that holds Evidently's drift report and,
as `DriftloopFigure` metrics, the figures driftloop computed itself (quality per
segment, the largest segment gap) so that the dashboard can plot them over time:

- Drift: drifted columns in the last run; share of drifted columns over time;
- Quality: thumbs-up rate and mean rating, overall and per segment, over time;
- Bias: the largest segment gap (best minus worst group) per segment field over time,
  and the benchmark's bias scores where benchmark figures are saved too;
- Judges (where `judges:` is configured): each judge's Cohen's kappa against the humans
  with its 95% bootstrap interval over time, and the PPI++ estimate of the quality metric
  it stands in for beside the human-only figure, both with their intervals.

    >>> ref = save_snapshot(Path(".driftloop/evidently"), "driftloop", out.drift.snapshot,
    ...                     name="monitor 2025-01-08", timestamp=window_end,
    ...                     metadata={"mlflow_run_id": run_id}, figures=out.current + out.bias)
    >>> ref.project_id, ref.snapshot_id
    ('0196...', '0196...')
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.metric_types import SingleValueCalculation, SingleValueMetric
from evidently.legacy.renderers.html_widgets import CounterData, counter

from driftloop.core.types import MetricResult

DESCRIPTION = (
    "driftloop monitor runs: Evidently drift of the current window against the reference, "
    "feedback quality per segment and the largest segment gap"
)
OVERALL = "overall"  # the `group` label of a figure over the whole window
# Figures whose interval is plotted too, as `<name>_low` and `<name>_high` (a DriftloopFigure holds one value):
# judges' kappa and PPI++ estimates in every group, the human-only figure they are compared with overall.
BOUNDED = {"judge_kappa", "thumbs_up_rate_ppi", "mean_rating_ppi"}
BOUNDED_OVERALL = {"thumbs_up_rate", "mean_rating"}


class DriftloopFigure(SingleValueMetric):
    """A figure driftloop computed (a `MetricResult`), carried into a snapshot so panels can plot it.

    Its labels (`source`, `name`, `field`, `group`) are what a dashboard panel filters on;
    the value is read from the one-row-per-figure dataset that `figures_snapshot` builds.
    """

    class Config:
        # PanelMetric prefixes every metric name with "evidently:metric_v2:", so the alias must carry it.
        type_alias = "evidently:metric_v2:DriftloopFigure"

    source: str
    name: str
    field: str = OVERALL
    group: str = OVERALL


class DriftloopFigureCalculation(SingleValueCalculation[DriftloopFigure]):
    def calculate(self, context: Any, current_data: Dataset, reference_data: Dataset | None):
        df = current_data.as_dataframe()
        m = self.metric
        row = df[
            (df["source"] == m.source) & (df["name"] == m.name) & (df["field"] == m.field) & (df["group"] == m.group)
        ].iloc[0]
        res = self.result(float(row["value"]))
        ci = f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" if pd.notna(row["ci_low"]) else ""
        res.widget = [
            counter(
                counters=[
                    CounterData(
                        f"{row['value']:.3f}{ci}",
                        f"{self.display_name()}, n={row['n']}" + (f"; {row['note']}" if row["note"] else ""),
                    )
                ],
                title="",
            )
        ]
        return res

    def display_name(self) -> str:
        m = self.metric
        where = "" if m.group == OVERALL else f" [{m.field}]" if m.group == "gap" else f" [{m.group}]"
        return f"driftloop {m.source}: {m.name}{where}"


def figure_labels(m: MetricResult) -> dict[str, str]:
    """The panel labels of a result: a quality figure per group, a segment gap per field, a benchmark per suite."""
    seg = dict(m.segment)
    if m.source == "bias" and "field" in seg:
        # worst/best change from run to run; one series per field keeps the line continuous.
        return {"source": m.source, "name": m.name, "field": seg["field"], "group": "gap"}
    if "suite" in seg:
        return {"source": m.source, "name": m.name, "field": seg.get("role", "suite"), "group": seg["suite"]}
    if seg:  # the group names its field too, so a legend of `{{group}}` reads "topic=billing"
        return {
            "source": m.source,
            "name": m.name,
            "field": ",".join(sorted(seg)),
            "group": ",".join(f"{k}={v}" for k, v in sorted(seg.items())),
        }
    return {"source": m.source, "name": m.name, "field": OVERALL, "group": OVERALL}


def _num(x: float | None) -> float:
    return float("nan") if x is None else float(x)  # an all-None column would be an object column


def with_bounds(results: Iterable[MetricResult]) -> list[MetricResult]:
    """`results` and, after each figure of `BOUNDED` (or of `BOUNDED_OVERALL` without a segment)
    that has an interval, its bounds as figures `<name>_low` and `<name>_high`."""
    out = []
    for m in results:
        out.append(m)
        bounded = m.name in BOUNDED or (m.name in BOUNDED_OVERALL and not m.segment)
        if bounded and m.ci_low is not None and m.ci_high is not None:
            for end, value in (("low", m.ci_low), ("high", m.ci_high)):
                out.append(m.model_copy(update={"name": f"{m.name}_{end}", "value": value}))
    return out


def figures_snapshot(results: Iterable[MetricResult]) -> Any | None:
    """An Evidently snapshot with one `DriftloopFigure` per result that has a value (None if none has),
    and the bounds of the figures whose interval a panel plots (`with_bounds`)."""
    rows, seen = [], set()
    for m in with_bounds(results):
        if m.value is None:
            continue
        labels = figure_labels(m)
        key = tuple(labels.values())
        if key in seen:  # the first of two results with the same labels wins
            continue
        seen.add(key)
        rows.append(
            {
                **labels,
                "value": float(m.value),
                "ci_low": _num(m.ci_low),
                "ci_high": _num(m.ci_high),
                "n": m.n,
                "note": m.note[:200],
            }
        )
    if not rows:
        return None
    df = pd.DataFrame(rows)
    # Only `value` is numerical: Evidently's column statistics divide by zero on an all-NaN CI column.
    cats = ["source", "name", "field", "group", "note"]
    ds = Dataset.from_pandas(df, data_definition=DataDefinition(categorical_columns=cats, numerical_columns=["value"]))
    metrics = [DriftloopFigure(**{k: r[k] for k in ("source", "name", "field", "group")}) for r in rows]
    return Report(metrics, include_tests=False).run(ds, None)


def merge_snapshots(base: Any, extra: Any) -> Any:
    """Add `extra`'s metric results and widgets to `base` (both Evidently snapshots), in place."""
    # Snapshot has no public merge; these four fields are exactly what to_snapshot_model() writes.
    base._metrics.update(extra._metrics)
    base._top_level_metrics = list(base._top_level_metrics) + [
        m for m in extra._top_level_metrics if m not in base._top_level_metrics
    ]
    base._widgets = list(base._widgets) + list(extra._widgets)
    base._tests_widgets = list(base._tests_widgets) + list(extra._tests_widgets)
    return base


@dataclass(frozen=True)
class SavedSnapshot:
    project_id: str
    snapshot_id: str
    workspace: str


def save_snapshot(
    workspace: Path,
    project: str,
    snapshot: Any,
    name: str,
    timestamp: datetime | None = None,
    metadata: dict[str, str] | None = None,
    tags: list[str] | None = None,
    figures: Iterable[MetricResult] = (),
    judge_panels: bool = False,
) -> SavedSnapshot:
    """Add `snapshot` (an Evidently Snapshot, or None) and `figures` to project `project` of the workspace.

    The project is created, with its dashboard panels, the first time (and panels added
    since are added to an older project). `figures` (driftloop's own MetricResults:
    quality, segment gaps, benchmark scores) join the snapshot as `DriftloopFigure`
    metrics. `timestamp` (default: the snapshot's own) places the run on the
    dashboard's time axis; the metadata and tags are shown with the run in the UI.
    `judge_panels` adds the Judges tab (`panels(judges=True)`), fed by the figures of
    `driftloop.services.judging.judge_figures` among `figures`.
    """
    from evidently.ui.workspace import Workspace

    extra = figures_snapshot(figures)
    if snapshot is None and extra is None:
        raise ValueError("save_snapshot: neither a snapshot nor any figure with a value to save")
    snapshot = extra if snapshot is None else (merge_snapshots(snapshot, extra) if extra is not None else snapshot)
    workspace.mkdir(parents=True, exist_ok=True)
    ws = Workspace(str(workspace))
    found = [p for p in ws.search_project(project) if p.name == project]
    proj = found[0] if found else ws.create_project(project, description=DESCRIPTION)
    add_panels(ws, proj, judges=judge_panels)
    # Snapshot takes these only in Report.run(); the evaluator that ran it does not know the window.
    if timestamp is not None:
        snapshot._timestamp = timestamp.replace(tzinfo=None) if timestamp.tzinfo else timestamp
    snapshot._metadata.update({k: str(v) for k, v in (metadata or {}).items()})
    snapshot._tags.extend(t for t in (tags or []) if t not in snapshot._tags)
    ref = ws.add_run(proj.id, snapshot, include_data=False, name=name)
    return SavedSnapshot(str(proj.id), str(ref.id), str(workspace))


def panels(judges: bool = False) -> list[tuple[str, Any]]:
    """(tab, panel) for every panel of the project's dashboard, in display order.

    `judges` adds the Judges tab. It is left out where no judge is configured, so that a
    dashboard does not carry a tab that could never show anything; configuring a judge
    later adds it to the existing project on the next save (`add_panels`).
    """
    from evidently.sdk.models import PanelMetric

    def fig(legend: str, **labels: str) -> PanelMetric:
        return PanelMetric(legend=legend, metric="DriftloopFigure", metric_labels=labels)

    share = PanelMetric(
        legend="share of drifted columns", metric="DriftedColumnsCount", metric_labels={"value_type": "share"}
    )
    count = PanelMetric(legend="drifted columns", metric="DriftedColumnsCount", metric_labels={"value_type": "count"})
    return [*_base_panels(fig, share, count), *(_judge_panels(fig) if judges else [])]


def _base_panels(fig, share, count) -> list[tuple[str, Any]]:
    from evidently.sdk.panels import counter_panel, line_plot_panel

    return [
        ("Drift", counter_panel("Drifted columns, last run", [count], size="half")),
        ("Drift", line_plot_panel("Share of drifted columns over time", [share], size="half")),
        # One PanelMetric matches every group of the metric: the UI draws one line per label set.
        (
            "Quality",
            line_plot_panel(
                "Thumbs-up rate per segment over time",
                [fig("{{group}}", source="quality", name="thumbs_up_rate")],
                description="Share of thumbs-up in each monitored window, overall and per segment group",
                size="half",
            ),
        ),
        (
            "Quality",
            line_plot_panel(
                "Mean rating per segment over time",
                [fig("{{group}}", source="quality", name="mean_rating")],
                description="Mean normalised rating [0, 1] per window, overall and per segment group",
                size="half",
            ),
        ),
        (
            "Bias",
            line_plot_panel(
                "Largest segment gap over time",
                [
                    fig("gap in {{field}}", source="bias", name="segment_gap"),
                    fig("{{group}}: {{name}}", source="benchmark", field="bias"),
                ],
                description="Best minus worst group's thumbs-up rate per segment field; the bias suite's scores where benchmarks are saved",
            ),
        ),
    ]


def _judge_panels(fig) -> list[tuple[str, Any]]:
    """The Judges tab: kappa per judge with its interval; PPI++ vs human-only, overall, with their intervals."""
    from evidently.sdk.panels import line_plot_panel

    def bounded(legend: str, name: str, **labels: str) -> list[Any]:
        return [
            fig(legend, source="quality", name=name, **labels),
            fig(f"{legend}, 95% low", source="quality", name=f"{name}_low", **labels),
            fig(f"{legend}, 95% high", source="quality", name=f"{name}_high", **labels),
        ]

    return [
        (
            "Judges",
            line_plot_panel(
                "Judge agreement with the humans (Cohen's kappa) over time",
                bounded("{{group}}", "judge_kappa", field="judge"),
                description="Each judge's Cohen's kappa against the human labels on the events rated by both, "
                "with its 95% bootstrap interval; a judge is used where the lower bound reaches its min_kappa",
                size="half",
            ),
        ),
        (
            "Judges",
            line_plot_panel(
                "Judged quality: PPI++ estimate vs human-only over time",
                [
                    *bounded("human-only thumbs-up rate", "thumbs_up_rate", group=OVERALL),
                    *bounded("PPI++ thumbs-up rate", "thumbs_up_rate_ppi", group=OVERALL),
                    *bounded("human-only mean rating", "mean_rating", group=OVERALL),
                    *bounded("PPI++ mean rating", "mean_rating_ppi", group=OVERALL),
                ],
                description="The whole window's quality from the rated events alone and the PPI++ estimate "
                "from the rated and the judged events, each with its 95% interval (an untrusted judge's "
                "estimate is plotted too; driftloop monitor says which estimates were used)",
                size="half",
            ),
        ),
    ]


def add_panels(ws: Any, proj: Any, judges: bool = False) -> list[str]:
    """Give `proj` (a project of workspace `ws`) every panel of `panels(judges)` it lacks, by title; returns the titles added.

    Also repairs tabs that list a panel twice, which Evidently 0.7's `add_panel` does for
    every panel added to an existing tab (it would be drawn twice).
    """
    import uuid

    from evidently.sdk.models import DashboardTabModel

    model = proj.dashboard.model()
    have = {p.title for p in model.panels}
    added = []
    for tab, panel in panels(judges):
        if panel.title in have:
            continue
        model.panels.append(panel)
        found = next((t for t in model.tabs if t.title == tab), None)
        if found is None:
            found = DashboardTabModel(id=uuid.uuid4(), title=tab, panels=[])
            model.tabs.append(found)
        found.panels.append(panel.id)
        added.append(panel.title)
    repaired = False
    for t in model.tabs:
        unique = list(dict.fromkeys(t.panels))
        repaired |= unique != list(t.panels)
        t.panels = unique
    if added or repaired:
        ws.save_dashboard(proj.id, model)
    return added


def benchmark_figures(metrics: dict[str, list[MetricResult]], roles: dict[str, str]) -> list[MetricResult]:
    """A benchmark run's results (suite -> results) labelled with their suite and role, ready for `save_snapshot`.

    The "Largest segment gap over time" panel plots those of the suites whose role is `bias`.
    """
    return [
        m.model_copy(update={"segment": {**m.segment, "suite": suite, "role": roles.get(suite, "suite")}})
        for suite, ms in metrics.items()
        for m in ms
    ]
