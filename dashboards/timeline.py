"""The loop timeline: one self-contained HTML page (plotly, inlined: it works offline) over what
MLflow recorded.

For each model version it shows the windows monitored while that version was the
champion (shaded spans labelled `vN`), the quality metrics of each window with their
95% confidence bands and the policy's floors, and the loop's events: retrain
triggers, retrains, gate results (pass or fail), promotions and rollbacks. Every
point opens its MLflow run on click, and a table under the plot lists the same
links.

    >>> tr = Tracker.from_config(cfg)
    >>> html = timeline_html(tr.cycle_history(), cfg.policy.floors, "http://localhost:5000",
    ...                      tr.experiment_id, champions=tr.champion_history())
    >>> Path("timeline.html").write_text(html)
    >>> log_timeline(tr, cfg, cycle_run_id)   # the same page as the run's timeline.html artifact
    'timeline.html'

Once plotly has drawn the page, a script counts the markers actually drawn: it sets
`document.title` to `driftloop timeline: N promotions` and fills `#render-stats` with
JSON, so a headless browser can check what rendered.
"""

from __future__ import annotations

import html
import json
import logging
from datetime import UTC, datetime
from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from driftloop.core import tags as T

METRICS = ("thumbs_up_rate", "mean_rating")  # plotted when the monitor logged them
EVENTS = {  # event -> (marker symbol, colour), one lane each, bottom to top
    "retrain triggered": ("triangle-up", "#d62728"),
    "retrain": ("diamond", "#1f77b4"),
    "retrain failed": ("square-x", "#9467bd"),
    "gate pass": ("circle", "#2ca02c"),
    "gate fail": ("x", "#7f7f7f"),
    "promotion": ("star", "#2ca02c"),
    "rollback": ("star-triangle-down", "#ff7f0e"),
    "first champion": ("star-open", "#2ca02c"),
}
ARTIFACT = "timeline.html"


def _ts(iso: str | None) -> datetime | None:
    if not iso:
        return None
    t = datetime.fromisoformat(iso)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _when(cycle: dict[str, Any]) -> datetime:
    """Where a cycle sits on the time axis: the end of its monitored window, else its start."""
    return _ts(cycle.get("monitor_params", {}).get("current_end")) or _ms(cycle["start"])


def _oldest_first(champions: list[dict[str, str]] | None) -> list[dict[str, str]]:
    # champion_history() is newest first by start time (ms); its `at` has whole seconds only, so keep its order.
    return list(reversed(champions or []))


def _serving_versions(history: list[dict[str, Any]], moves: list[dict[str, str]]) -> dict[str, str]:
    """Cycle run id -> the champion version while its window was monitored ("" where unknown).

    From the recorded moves of `champion` when there are any: the last move at or before
    the cycle's start. Moves are compared at whole seconds (`at`), so a move in the same
    second counts as before it (the first champion is registered just before the first
    cycle). A store without moves falls back to the summaries: the version a cycle
    started with, i.e. the version before its own promotion.
    """
    out, previous = {}, ""
    for c in history:
        s = c.get("summary") or {}
        start = _ms(c["start"])
        before = [m for m in moves if _ts(m["at"]) <= start]
        if before:
            out[c["run_id"]] = before[-1]["version"]
        elif str(s.get("outcome", "")).startswith("promoted"):
            out[c["run_id"]] = previous  # the summary already names the promoted version
        else:
            out[c["run_id"]] = str(s.get("champion_version") or "")
        previous = str(s.get("champion_version") or out[c["run_id"]])
    return out


def _cycle_note(cycle: dict[str, Any]) -> str:
    """The cycle's outcome and its window's headline metric, e.g. `no retrain needed; thumbs_up_rate 0.85 [0.81, 0.89]`."""
    s, m = cycle.get("summary") or {}, cycle.get("monitor_metrics", {})
    parts = [s.get("outcome") or cycle.get("tags", {}).get(T.OUTCOME, "no outcome recorded")]
    for name in METRICS:
        k = f"quality/{name}"
        if k in m:
            ci = (
                f" [{m[k + '/ci_low']:.2f}, {m[k + '/ci_high']:.2f}]"
                if k + "/ci_low" in m and k + "/ci_high" in m
                else ""
            )
            parts.append(f"{name} {m[k]:.2f}{ci}")
    return "; ".join(parts)


def _cycle_events(cycle: dict[str, Any], with_promotions: bool) -> list[tuple[str, str]]:
    s, tags = cycle.get("summary") or {}, cycle.get("tags", {})
    outcome = s.get("outcome") or tags.get(T.OUTCOME, "")
    gate = "; ".join(s.get("gate_reasons", [])[:2])
    out = []
    if s.get("decision_action") == "retrain" or tags.get(T.decision_action("decide")) == "retrain":
        out.append(("retrain triggered", "; ".join((s.get("regression") or s.get("decision_reasons") or [])[:3])))
    if s.get("challenger_version") or outcome.startswith(("promoted", "rejected")):
        out.append(("retrain", s.get("retrain_note") or f"challenger version {s.get('challenger_version', '?')}"))
    if outcome.startswith("promoted"):
        out.append(("gate pass", f"{outcome}: {gate}"))
        if with_promotions:
            out.append(("promotion", outcome))
    elif outcome.startswith("rejected"):
        out.append(("gate fail", f"{outcome}: {gate}"))
    elif outcome == "retrain failed":
        out.append(("retrain failed", s.get("retrain_note") or outcome))
    return out


def timeline_rows(
    history: list[dict[str, Any]], link, champions: list[dict[str, str]] | None = None
) -> list[dict[str, Any]]:
    """Every row of the page's table, oldest first: `when`, `event`, `version`, `detail`, `link`, `run_id`.

    Each cycle gives a `cycle` row (its outcome and headline metric), then one row per
    event it holds. `link(run_id)` gives a run's address. With `champions` (`Tracker.champion_history()`),
    promotions and rollbacks are the recorded moves of the `champion` alias (gate, manual,
    rollback); without it (or in an older store that recorded none), promotions come from
    the cycles' outcomes.
    """
    moves = _oldest_first(champions)
    versions = _serving_versions(history, moves)
    rows = []
    for c in history:
        version = versions[c["run_id"]]
        rows.append(
            {
                "when": _when(c),
                "event": "cycle",
                "version": version,
                "detail": _cycle_note(c)[:300],
                "run_id": c["run_id"],
                "link": link(c["run_id"]),
            }
        )
        for event, text in _cycle_events(c, with_promotions=not moves):
            rows.append(
                {
                    "when": _when(c),
                    "event": event,
                    "version": version,
                    "detail": text[:300],
                    "run_id": c["run_id"],
                    "link": link(c["run_id"]),
                }
            )
    for m in moves:
        event = {"rollback": "rollback", "initial": "first champion"}.get(m["how"], "promotion")
        detail = f"version {m['previous'] or '-'} -> {m['version']} ({m['how']} by {m['by']}): {m['reason']}"
        rows.append(
            {
                "when": _ts(m["at"]),
                "event": event,
                "version": m["version"],
                "detail": detail[:300],
                "run_id": m["run_id"],
                "link": link(m["run_id"]),
            }
        )
    return sorted(rows, key=lambda r: r["when"])


def _series(history: list[dict[str, Any]], key: str, versions: dict[str, str], link) -> tuple[list, ...]:
    xs, ys, lo, hi, links, text = [], [], [], [], [], []
    for c in history:
        m = c.get("monitor_metrics", {})
        if key in m:
            xs.append(_when(c))
            ys.append(m[key])
            lo.append(m.get(f"{key}/ci_low", m[key]))
            hi.append(m.get(f"{key}/ci_high", m[key]))
            links.append(link(c["run_id"]))
            text.append(f"champion v{versions[c['run_id']]}" if versions[c["run_id"]] else "")
    return xs, ys, lo, hi, links, text


def timeline_figure(
    history: list[dict[str, Any]],
    floors: dict[str, float],
    link,
    champions: list[dict[str, str]] | None = None,
    segment_field: str | None = None,
    title: str = "driftloop",
) -> go.Figure:
    """The plotly figure of the page: metric trends (top) and event lanes (bottom); see `timeline_html`."""
    moves = _oldest_first(champions)
    versions = _serving_versions(history, moves)
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.68, 0.32],
        vertical_spacing=0.07,
        subplot_titles=(
            "feedback quality per monitored window (95% CI); shaded: window, by champion version",
            "loop events (click a point: its MLflow run)",
        ),
    )
    seen = {k for c in history for k in c.get("monitor_metrics", {})}
    keys = [(f"quality/{m}", m) for m in METRICS if f"quality/{m}" in seen]
    if segment_field:
        prefix = f"quality/{METRICS[0]}/{segment_field}:"
        keys += [
            (k, k.rsplit("/", 1)[-1].replace(":", "="))
            for k in sorted(seen)
            if k.startswith(prefix) and not k.endswith(("/ci_low", "/ci_high"))
        ]
    for i, (key, name) in enumerate(keys):
        xs, ys, lo, hi, links, text = _series(history, key, versions, link)
        colour = qualitative.Plotly[i % len(qualitative.Plotly)]
        fig.add_trace(
            go.Scatter(
                x=xs + xs[::-1],
                y=hi + lo[::-1],
                fill="toself",
                fillcolor=colour,
                opacity=0.15,
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=name,
                name=f"{name} 95% CI",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines+markers",
                name=name,
                legendgroup=name,
                customdata=links,
                text=text,
                line={"color": colour, "dash": "dot" if "=" in name else "solid"},
                hovertemplate="%{y:.3f}<br>%{x}<br>%{text}<br>click: MLflow run<extra>" + name + "</extra>",
            ),
            row=1,
            col=1,
        )
        metric = name if name in METRICS else None
        if metric and metric in floors:
            fig.add_hline(
                y=floors[metric],
                line_dash="dash",
                line_color=colour,
                row=1,
                col=1,
                annotation_text=f"floor {metric} {floors[metric]:.2f}",
            )
    last = None
    for c in history:  # the monitored windows, tinted per champion version
        p = c.get("monitor_params", {})
        start, end = _ts(p.get("current_start")), _ts(p.get("current_end"))
        if not (start and end):
            continue
        v = versions[c["run_id"]]
        colour = qualitative.Pastel[int(v) % len(qualitative.Pastel)] if v.isdigit() else "#dddddd"
        fig.add_vrect(
            x0=start,
            x1=end,
            fillcolor=colour,
            opacity=0.35,
            line_width=0,
            layer="below",
            row=1,
            col=1,
            annotation_text=f"v{v}" if v and v != last else "",
            annotation_position="top left",
        )
        last = v
    rows = timeline_rows(history, link, champions)
    for event, (symbol, colour) in EVENTS.items():
        mine = [r for r in rows if r["event"] == event]
        if not mine and event in ("first champion", "retrain failed"):
            continue  # no empty lanes for the rare events
        fig.add_trace(
            go.Scatter(
                x=[r["when"] for r in mine],
                y=[event] * len(mine),
                mode="markers",
                name=event,
                text=[html.escape(f"v{r['version']}: {r['detail']}") for r in mine],
                customdata=[r["link"] for r in mine],
                marker={"symbol": symbol, "size": 14, "color": colour},
                hovertemplate="%{text}<extra>" + event + "</extra>",
            ),
            row=2,
            col=1,
        )
    fig.update_yaxes(categoryorder="array", categoryarray=list(EVENTS), row=2, col=1)
    fig.update_layout(
        title=f"{title}: loop timeline ({len(history)} cycles)", height=700, template="plotly_white", margin={"t": 90}
    )
    return fig


_SCRIPT = """
var gd = document.getElementById('{plot_id}');
gd.on('plotly_click', function (d) { var u = d.points[0].customdata; if (u) { window.open(u, '_blank'); } });
// Count what was drawn, not what was asked for: markers per event trace in the SVG.
var drawn = {}, linked = 0, points = 0;
gd.querySelectorAll('g.trace.scatter').forEach(function (g) {
  var cd = g.__data__, tr = cd && cd[0] && cd[0].trace;
  if (!tr) { return; }
  var n = g.querySelectorAll('path.point').length;
  drawn[tr.name] = (drawn[tr.name] || 0) + n;
  if (tr.customdata) { points += n; linked += tr.customdata.filter(function (u) { return !!u; }).length; }
});
document.getElementById('render-stats').textContent = JSON.stringify({markers: drawn, points: points, linked: linked});
document.title = 'driftloop timeline: ' + (drawn['promotion'] || 0) + ' promotions';
"""

_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>driftloop timeline</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}}td:first-child{{white-space:nowrap}}
#render-stats{{display:none}}</style></head>
<body><pre id="render-stats"></pre>
{plot}
<h3>Events and their MLflow runs</h3>
<table id="events"><tr><th>when (UTC)</th><th>event</th><th>champion</th><th>detail</th><th>MLflow run</th></tr>
{rows}</table>
</body></html>
"""


def timeline_html(
    history: list[dict[str, Any]],
    floors: dict[str, float],
    mlflow_url: str,
    experiment_id: str,
    segment_field: str | None = None,
    title: str = "driftloop",
    champions: list[dict[str, str]] | None = None,
) -> str:
    """The whole page from `Tracker.cycle_history()` (and `champion_history()`); `mlflow_url` prefixes each run link."""

    def link(run_id: str) -> str:
        return f"{mlflow_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    fig = timeline_figure(history, floors, link, champions, segment_field, title)
    # The post script runs once the plot is drawn; _PAGE puts #render-stats before the plot for it.
    plot = fig.to_html(include_plotlyjs=True, full_html=False, post_script=_SCRIPT, div_id="timeline")
    table = "\n".join(
        f"<tr><td>{r['when']:%Y-%m-%d %H:%M}</td><td>{html.escape(r['event'])}</td>"
        f"<td>{'v' + html.escape(r['version']) if r['version'] else '-'}</td><td>{html.escape(r['detail'])}</td>"
        f'<td><a href="{html.escape(r["link"])}" target="_blank">{html.escape(r["run_id"][:12])}</a></td></tr>'
        for r in reversed(timeline_rows(history, link, champions))
    )
    return _PAGE.format(plot=plot, rows=table)


def mlflow_ui_url(cfg: Any) -> str:
    """Address the page's links point at: `alerts.mlflow_ui_url`, else an http(s) tracking URI, else localhost:5000."""
    url = getattr(getattr(cfg, "alerts", None), "mlflow_ui_url", None)
    if url:
        return url
    if cfg.tracking_uri.startswith(("http://", "https://")):
        return cfg.tracking_uri
    return "http://localhost:5000"  # where `mlflow ui` listens by default


def build_timeline(tracker: Any, cfg: Any, mlflow_url: str | None = None) -> tuple[str, int]:
    """(page, number of cycles) for the tracker's experiment, as `driftloop dashboard` writes it."""
    history = tracker.cycle_history()
    seg = cfg.monitor.segment_fields[0] if cfg.monitor.segment_fields else None
    page = timeline_html(
        history,
        cfg.policy.floors,
        mlflow_url or mlflow_ui_url(cfg),
        tracker.experiment_id,
        seg,
        cfg.project,
        champions=tracker.champion_history(limit=1000),
    )
    return page, len(history)


def log_timeline(tracker: Any, cfg: Any, run_id: str, mlflow_url: str | None = None) -> str | None:
    """Build the page and log it as `timeline.html` of MLflow run `run_id` (a cycle run); returns the artifact name.

    Meant for the end of a cycle: a failure is logged as a warning and returns None, so a
    dashboard never fails the cycle it describes.
    """
    try:
        page, _ = build_timeline(tracker, cfg, mlflow_url)
        tracker.log_text(run_id, page, ARTIFACT)
    except Exception as e:  # noqa: BLE001 - the page is a view; the cycle's own records are already written
        logging.getLogger("driftloop").warning("timeline: not logged to run %s: %s", run_id, e)
        return None
    return ARTIFACT


def render_stats(dom: str) -> dict[str, Any]:
    """The `#render-stats` JSON from a page's DOM after rendering (e.g. `chromium --dump-dom`); {} if absent."""
    start = dom.find('id="render-stats">')
    if start < 0:
        return {}
    text = dom[start + len('id="render-stats">') : dom.find("</pre>", start)]
    return json.loads(html.unescape(text)) if text.strip() else {}
