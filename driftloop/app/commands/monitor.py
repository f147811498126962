"""`driftloop monitor`: drift, quality and segment gaps on the current window, as one compact table.

$ driftloop monitor --config driftloop.yaml
monitor: current 1200 events vs reference 8400 (preceding 7 days)
┏━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━┳━━━━━━┓
┃ metric         ┃ segment        ┃ reference            ┃ current              ┃ n    ┃ note ┃
...
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from driftloop.app.commands import config


def add_commands(sub) -> None:
    p = sub.add_parser("monitor", help="drift, quality and segment gaps on the current window")
    p.set_defaults(handler=monitor)


def monitor(args: argparse.Namespace) -> int:
    from driftloop.app.report import console

    cfg = config(args)
    from flows.common import StageParams, run_flow
    from flows.monitor import monitor as run

    with console.status("monitoring: reading the windows, drift, quality and segment gaps"):
        res = run_flow(run, StageParams(config=args.config))
    console.print(monitor_table(res))
    if res.workspace:
        console.print(
            f"Evidently: .venv/bin/evidently ui --workspace {res.workspace['workspace']} "
            f"(project {cfg.project}, snapshot {res.workspace['snapshot_id']})"
        )
    return 0


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _ci(m) -> str:
    if m is None:
        return "-"
    if m.ci_low is None:
        return _fmt(m.value)
    return f"{_fmt(m.value)} [{_fmt(m.ci_low)}, {_fmt(m.ci_high)}]"


def _seg(m) -> str:
    return ",".join(f"{k}={v}" for k, v in m.segment.items()) or "all"


def monitor_table(res) -> Table:
    """One row per quality figure (reference and current, with intervals), one per drifted,
    skipped-for-a-reason or text column, the drifted share, and one per segment gap."""
    w = res.windows or {}
    title = f"monitor: current {res.n_current} events vs reference {res.n_reference}"
    if w.get("reference_source"):
        title += f" ({w['reference_source']}{', cached profile' if getattr(res, 'reference_cached', False) else ''})"
    t = Table(title=title)
    for c in ("metric", "segment", "reference", "current", "n", "note"):
        t.add_column(c, overflow="fold")
    ref = {m.label(): m for m in res.reference}
    for m in res.current:
        t.add_row(m.name, _seg(m), _ci(ref.get(m.label())), _ci(m), str(m.n), m.note)
    for m in list(res.drift) + list(getattr(res, "text", [])):
        if m.name == "drifted_share":
            t.add_row(m.name, "all", "", _fmt(m.value), str(m.n), m.note)
        elif m.passed is False:
            t.add_row(m.name, m.segment.get("column", ""), "", _fmt(m.value), str(m.n), "DRIFT: " + m.note)
        elif m.value is None:
            t.add_row(m.name, m.segment.get("column", ""), "", "-", str(m.n), m.note)
    for m in res.bias:
        t.add_row(m.name, _seg(m), "", _ci(m), str(m.n), m.note)
    _judge_rows(t, res)
    return t


def _kappa(a) -> str:
    return "-" if a is None or a.kappa is None else f"{a.kappa:.3f} [{_fmt(a.kappa_low)}, {_fmt(a.kappa_high)}]"


def _judge_rows(t: Table, res) -> None:
    """The judge section: each judge's kappa against the humans, whether it is used and why, then
    its PPI++ estimates (n: human labels + judged-only events). The reference column holds the
    reference window's kappa and, beside a used estimate, the reference figure `decide` compares
    it with: the reference's own estimate where a judge is trusted there, else its human-only figure."""
    from driftloop.core.findings import render
    from driftloop.core.judging import apply

    judged = getattr(res, "judged", None)
    ref_kappa = {c.judge: c.overall for c in getattr(res, "reference_judges", [])}
    ref = {m.label(): m for m in apply(list(res.reference), getattr(res, "reference_judged", None))}
    findings = {f.detail.get("judge"): f for f in (judged.findings if judged is not None else [])}
    for c in getattr(res, "judges", []):
        a, f = c.overall, findings.get(c.judge)
        t.add_row(
            f"judge {c.judge}: kappa",
            "all",
            _kappa(ref_kappa.get(c.judge)),
            _kappa(a),
            str(a.n),
            render(f) if f is not None else "",
        )
        for s in c.segments:
            t.add_row(
                f"judge {c.judge}: kappa", _seg(s), "", "-" if s.kappa is None else f"{s.kappa:.3f}", str(s.n), ""
            )
    if judged is None:
        return
    for used, ms in (("used", judged.estimates), ("shown only", judged.shown)):
        for m in ms:
            against = _ci(ref.get(m.label())) if used == "used" else ""
            t.add_row(f"{m.name} (PPI++)", _seg(m), against, _ci(m), f"{m.n}+{m.n_judged}", f"{used}: {m.note}")
