"""Terminal output of the CLI: compact rich tables over what the flows return.

Rendering only; every figure shown was computed elsewhere and logged as is.

    >>> cycle_table(summary)   # prints the cycle's stages, decision and gate
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from driftloop.config import Config

console = Console()


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ci(m) -> str:
    if getattr(m, "ci_low", None) is None:
        return _fmt(m.value)
    return f"{_fmt(m.value)} [{_fmt(m.ci_low)}, {_fmt(m.ci_high)}]"


def plan(drop: float, power: float, discordant: float | None, cfg: Config) -> int:
    """Print how many golden items a paired test needs to detect `drop`."""
    from driftloop.errors import InputError
    from driftloop.stats import paired_sample_size

    if not 0 < drop < 1:
        raise InputError(f"--drop {drop}: must be between 0 and 1 (an accuracy difference, e.g. 0.05)")
    if not 0 < power < 1:
        raise InputError(f"--power {power}: must be between 0 and 1")
    disc = discordant if discordant is not None else min(1.0, 2 * drop + 0.05)
    if not drop < disc <= 1:
        raise InputError(f"--discordant {disc}: must exceed --drop and be at most 1")
    n = paired_sample_size(drop, disc, alpha=cfg.policy.alpha, power=power)
    console.print(
        f"To detect a drop of {drop:.3f} in accuracy with {power:.0%} power at alpha={cfg.policy.alpha} "
        f"(two-sided exact McNemar, paired items), assuming the two models disagree on {disc:.0%} of items: "
        f"[bold]{n}[/bold] golden items.")
    return 0


def ingest_table(s: dict[str, Any]) -> None:
    t = Table(title="ingest")
    for k in ("files", "read", "accepted", "duplicates", "quarantined", "total_events"):
        t.add_column(k, justify="right")
    t.add_row(*[_fmt(s.get(k)) for k in ("files", "read", "accepted", "duplicates", "quarantined", "total_events")])
    console.print(t)
    for reason, n in sorted((s.get("reasons") or {}).items(), key=lambda x: -x[1])[:10]:
        console.print(f"  quarantined {n} x {reason}")


def monitor_table(res) -> None:
    t = Table(title=f"monitor: current {res.n_current} events vs reference {res.n_reference}")
    for c in ("metric", "segment", "reference", "current", "n", "note"):
        t.add_column(c)
    ref = {m.label(): m for m in res.reference}
    for m in res.current:
        r = ref.get(m.label())
        seg = ",".join(f"{k}={v}" for k, v in m.segment.items()) or "all"
        t.add_row(m.name, seg, _ci(r) if r else "-", _ci(m), str(m.n), m.note)
    for m in res.drift:
        if m.name == "drifted_share" or m.passed is False:
            t.add_row(m.name, ",".join(f"{k}={v}" for k, v in m.segment.items()) or "all", "",
                      _fmt(m.value), str(m.n), "DRIFT" if m.passed is False else m.note)
    for m in res.bias:
        t.add_row(m.name, ",".join(f"{k}={v}" for k, v in m.segment.items()), "", _ci(m), str(m.n), m.note)
    console.print(t)


def benchmark_table(res) -> None:
    t = Table(title=f"benchmark: model {res.model}")
    for c in ("suite", "metric", "value [95% CI]", "n", "cached"):
        t.add_column(c)
    for suite, metrics in res.metrics.items():
        for m in metrics:
            t.add_row(suite, m.name, _ci(m), str(m.n), "yes" if m.note == "cached" else "")
    console.print(t)


def suites(cfg: Config) -> None:
    t = Table(title="benchmark suites")
    for c in ("suite", "role", "task", "kind", "limit", "fewshot", "metric"):
        t.add_column(c)
    for name, s in cfg.benchmark.suites.items():
        for task in s.tasks:
            t.add_row(name, s.role, task.name, task.kind, _fmt(task.limit), str(task.num_fewshot), task.metric)
    console.print(t)


def cycle_table(s) -> None:
    """One cycle's summary: stage times, the decision and, if it ran, the gate."""
    t = Table(title=f"cycle {s.cycle}: {s.outcome}")
    t.add_column("stage")
    t.add_column("result")
    t.add_column("seconds", justify="right")
    for stage, secs in s.stage_seconds.items():
        t.add_row(stage, s.stage_notes.get(stage, ""), f"{secs:.1f}")
    console.print(t)
    for r in s.decision_reasons[:6]:
        console.print(f"  decide: {r}")
    for r in s.gate_reasons:
        console.print(f"  gate: {r}")


def demo_table(summaries: list, cfg: Config) -> None:
    """The demo's ending: the regression, the retrain, challenger vs champion, the promotion."""
    for s in summaries:
        cycle_table(s)
    last = summaries[-1]
    t = Table(title="driftloop demo: what happened", show_lines=True)
    t.add_column("step")
    t.add_column("evidence")
    reg = last.regression
    shown = reg[:3] + ([f"(+{len(reg) - 3} more breaches: decision_decide.json in the cycle's MLflow run)"]
                       if len(reg) > 3 else [])
    t.add_row("regression found", "\n".join(shown) if reg else "none")
    t.add_row("retrain", last.retrain_note or "not run")
    gate_rows = [f"{g['suite']} ({g['role']}): challenger {g['challenger']:.3f} vs champion {g['champion']:.3f}, "
                 f"diff {g['diff']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}], n={g['n']}, "
                 f"{'pass' if g['passed'] else 'fail'}" for g in last.gate_table]
    t.add_row("challenger vs champion", "\n".join(gate_rows) or "not run")
    t.add_row("decision", f"{last.outcome}; champion -> version {last.champion_version}")
    total = sum(sum(s.stage_seconds.values()) for s in summaries)
    t.add_row("wall time", f"{total:.0f} s in stages (see the per-stage tables above)")
    console.print(t)
    ui(cfg)


def ui(cfg: Config) -> None:
    console.print("Open the stored state:")
    console.print(f"  MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {cfg.tracking_uri} --port 5000")
    home = cfg.state_path / "prefect"
    console.print(f"  Prefect UI: PREFECT_HOME={home} .venv/bin/prefect server start --port 4200")


def status(cfg: Config) -> None:
    """The loop's state machine position and the registry's aliases."""
    from driftloop.store import Store

    path = cfg.store_url
    if path.startswith("sqlite:///") and not __import__("pathlib").Path(path[len("sqlite:///"):]).exists():
        console.print(f"no store yet at {path}: run `driftloop loop` or `driftloop demo` first")
        return
    store = Store(path)
    st = store.get_state(cfg.project)
    console.print(f"state: [bold]{st['state']}[/bold] since {st['since']}: {st.get('reason') or ''}")
    for h in store.history(cfg.project, limit=10):
        console.print(f"  {h['at']}  {h['from_state']} -> {h['to_state']}: {h['reason']}")
    from driftloop.tracking import Tracker

    tr = Tracker.from_config(cfg)
    for alias in ("champion", "challenger"):
        console.print(f"{alias}: version {tr.alias_version(alias) or '-'} of {cfg.tracking.registered_model}")
