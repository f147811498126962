"""The loop timeline: one self-contained HTML page (plotly, inlined) over what MLflow recorded.

For each cycle it shows the monitored window's quality metrics with their 95%
confidence bands and floors, and the loop's events: retrain triggers,
promotions, rejections and failures. Every point links to its MLflow run.

    >>> html = timeline_html(tracker.cycle_history(), floors={"thumbs_up_rate": 0.7},
    ...                      mlflow_url="http://localhost:5000", experiment_id="1")
    >>> Path("timeline.html").write_text(html)

The page sets `document.title` to `driftloop timeline: N promotions` once
plotly has drawn it, so a headless browser can check what rendered.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

METRIC = "thumbs_up_rate"
EVENTS = {  # event -> (marker symbol, colour)
    "retrain triggered": ("triangle-up", "#d62728"),
    "promotion": ("star", "#2ca02c"),
    "rejection": ("x", "#7f7f7f"),
    "retrain failed": ("square-x", "#9467bd"),
}


def _when(cycle: dict[str, Any]) -> datetime:
    end = cycle.get("monitor_params", {}).get("current_end")
    if end:
        return datetime.fromisoformat(end)
    return datetime.fromtimestamp(cycle["start"] / 1000, tz=timezone.utc)


def _series(history: list[dict[str, Any]], key: str) -> tuple[list, list, list, list, list]:
    xs, ys, lo, hi, links = [], [], [], [], []
    for c in history:
        m = c.get("monitor_metrics", {})
        if key in m:
            xs.append(_when(c))
            ys.append(m[key])
            lo.append(m.get(f"{key}/ci_low", m[key]))
            hi.append(m.get(f"{key}/ci_high", m[key]))
            links.append(c["link"])
    return xs, ys, lo, hi, links


def _events(cycle: dict[str, Any]) -> list[tuple[str, str]]:
    s, tags = cycle.get("summary") or {}, cycle.get("tags", {})
    outcome = s.get("outcome") or tags.get("driftloop.outcome", "")
    out = []
    if s.get("decision_action") == "retrain" or tags.get("driftloop.decide.action") == "retrain":
        out.append(("retrain triggered", "; ".join((s.get("regression") or s.get("decision_reasons") or [])[:3])))
    if outcome.startswith("promoted"):
        out.append(("promotion", outcome + ": " + "; ".join(s.get("gate_reasons", [])[:2])))
    elif outcome.startswith("rejected"):
        out.append(("rejection", outcome + ": " + "; ".join(s.get("gate_reasons", [])[:2])))
    elif outcome == "retrain failed":
        out.append(("retrain failed", outcome))
    return out


def timeline_html(history: list[dict[str, Any]], floors: dict[str, float], mlflow_url: str,
                  experiment_id: str, segment_field: str | None = None, title: str = "driftloop") -> str:
    """Build the page from `Tracker.cycle_history()`; `mlflow_url` prefixes each run link."""
    for c in history:
        c["link"] = f"{mlflow_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{c['run_id']}"
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.06,
                        subplot_titles=(f"{METRIC} per monitored window (95% CI)", "loop events"))
    keys = [f"quality/{METRIC}"]
    if segment_field:
        seen = {k for c in history for k in c.get("monitor_metrics", {})}
        prefix = f"quality/{METRIC}/{segment_field}:"
        keys += sorted(k for k in seen if k.startswith(prefix) and not k.endswith(("/ci_low", "/ci_high")))
    for i, key in enumerate(keys):
        xs, ys, lo, hi, links = _series(history, key)
        if not xs:
            continue
        name = "overall" if key == keys[0] else key.rsplit("/", 1)[-1].replace(":", "=")
        colour = qualitative.Plotly[i % len(qualitative.Plotly)]
        fig.add_trace(go.Scatter(x=xs + xs[::-1], y=hi + lo[::-1], fill="toself", fillcolor=colour, opacity=0.15,
                                 line={"width": 0}, hoverinfo="skip", showlegend=False, legendgroup=name),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name, customdata=links,
                                 line={"color": colour},
                                 hovertemplate="%{y:.3f}<br>%{x}<br>click: MLflow run<extra>" + name + "</extra>"),
                      row=1, col=1)
    if METRIC in floors:
        fig.add_hline(y=floors[METRIC], line_dash="dash", line_color="#d62728", row=1, col=1,
                      annotation_text=f"floor {floors[METRIC]:.2f}")
    by_event: dict[str, tuple[list, list, list]] = {e: ([], [], []) for e in EVENTS}
    for c in history:
        for event, text in _events(c):
            xs, texts, links = by_event[event]
            xs.append(_when(c))
            texts.append(text[:300])
            links.append(c["link"])
    for event, (xs, texts, links) in by_event.items():
        symbol, colour = EVENTS[event]
        fig.add_trace(go.Scatter(x=xs, y=[event] * len(xs), mode="markers", name=event, text=texts,
                                 customdata=links, marker={"symbol": symbol, "size": 14, "color": colour},
                                 hovertemplate="%{text}<extra>" + event + "</extra>"), row=2, col=1)
    fig.update_layout(title=f"{title}: loop timeline ({len(history)} cycles)", height=640, template="plotly_white")
    post = """
var gd = document.getElementById('{plot_id}');
gd.on('plotly_click', function (d) { var u = d.points[0].customdata; if (u) { window.open(u, '_blank'); } });
var promo = gd.data.filter(function (t) { return t.name === 'promotion'; })[0];
document.title = 'driftloop timeline: ' + (promo ? promo.x.length : 0) + ' promotions';
"""
    return fig.to_html(include_plotlyjs=True, full_html=True, post_script=post, div_id="timeline")
