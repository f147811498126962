"""Terminal output of the CLI: compact rich tables over what the flows return.

Rendering only; every figure shown was computed elsewhere and logged as is.

    >>> cycle_table(summary)   # prints the cycle's stages, decision and gate
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from rich.console import Console
from rich.table import Table

from driftloop.core.config import Config

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
    """Print how many golden items the gate's paired test needs to detect `drop` with `power`."""
    from driftloop.core.errors import InputError
    from driftloop.core.stats import paired_power, paired_sample_size

    if not 0 < drop < 1:
        raise InputError(f"--drop {drop}: must be between 0 and 1 (an accuracy difference, e.g. 0.05)")
    if not 0 < power < 1:
        raise InputError(f"--power {power}: must be between 0 and 1")
    disc = discordant if discordant is not None else min(1.0, 2 * drop + 0.05)
    if not drop < disc <= 1:
        raise InputError(f"--discordant {disc}: must exceed --drop and be at most 1")
    alpha = cfg.policy.alpha
    with console.status("computing the exact power of the paired test"):
        n = paired_sample_size(drop, disc, alpha=alpha, power=power)
    console.print(
        f"To detect a drop of {drop:.3f} in accuracy with {power:.0%} power at alpha={alpha} "
        f"(one-sided exact McNemar on paired items, as the gate uses), assuming the two models disagree "
        f"on {disc:.0%} of items: [bold]{n}[/bold] golden items.",
        soft_wrap=True,
    )
    t = Table(title="exact power at other golden-set sizes")
    t.add_column("golden items", justify="right")
    t.add_column("power", justify="right")
    for m in sorted({50, 100, 200, 500, 1000, 2000, n}):
        t.add_row(str(m) + (" (recommended)" if m == n else ""), f"{paired_power(m, drop, disc, alpha):.2f}")
    console.print(t)
    if cfg.policy.min_n > n:
        console.print(
            f"note: policy.min_n={cfg.policy.min_n} is above this; below min_n the gate says 'insufficient data'"
        )
    return 0


def plan_suite(suite: str, power: float, discordant: float | None, sds: dict[str, float], cfg: Config) -> int:
    """Print, for each task of a canary or bias suite, the paired items its non-inferiority test needs.

    The gate tests each such task one-sided at `policy.alpha` against its margin in the metric's
    units; with no true difference between the models, a z-test reaches `power` at
    n = ((z_alpha + z_power) * sd / margin)^2 (`stats.ni_sample_size`). A task named in `sds` is
    planned with that standard deviation of the per-item difference (a likelihood difference,
    say); any other as 0/1 outcomes, sd = sqrt(discordant share). A target metric's distance to
    its target is planned as a difference of means (both models on the same side of it).
    """
    from driftloop.core.errors import InputError
    from driftloop.core.stats import ni_sample_size

    s = cfg.benchmark.suites.get(suite)
    if s is None:
        raise InputError(f"--suite {suite}: no such suite (the config has {', '.join(sorted(cfg.benchmark.suites))})")
    if s.role == "target":
        raise InputError(f"--suite {suite}: a target suite is sized by --drop (the gain it must detect)")
    if not 0 < power < 1:
        raise InputError(f"--power {power}: must be between 0 and 1")
    disc = 0.2 if discordant is None else discordant
    if not 0 < disc <= 1:
        raise InputError(f"--discordant {disc}: must be in (0, 1]")
    unknown = set(sds) - {t.name for t in s.tasks}
    if unknown:
        raise InputError(f"--sd {sorted(unknown)[0]}: no such task in suite {suite}")
    alpha = cfg.policy.alpha
    console.print(
        f"suite {suite} ({s.role}): paired items for the non-inferiority test to pass with "
        f"{power:.0%} power at alpha={alpha} when the two models are equally good",
        soft_wrap=True,
    )
    for i, task in enumerate(s.tasks):
        key = f"benchmark.suites.{suite}.tasks.{i}"
        better = (
            f"target {task.target:g}"
            if task.target is not None
            else f"{task.direction} is better"
            if task.direction
            else "lm-eval's direction"
        )
        margin = task.margin
        if margin is None and task.relative_margin is None and s.role not in cfg.policy.relative_margins:
            margin = cfg.policy.margins.get(s.role)
        if margin is None:
            console.print(
                f"  {task.name} {task.metric} ({better}): relative margin; set {key}.margin in the "
                "metric's units to plan it",
                soft_wrap=True,
            )
            continue
        if task.name in sds:
            spread, how = sds[task.name], f"sd of the per-item difference {sds[task.name]:g} (--sd)"
        else:
            spread, how = disc**0.5, f"0/1 outcomes, {disc:.0%} of items discordant"
        n = ni_sample_size(margin, spread, alpha=alpha, power=power)
        src = "" if task.margin is not None else f" (the {s.role} role's default; set {key}.margin)"
        console.print(
            f"  {task.name} {task.metric} ({better}), margin {margin:g}{src}: [bold]{n:,}[/bold] paired items ({how})",
            soft_wrap=True,
        )
    return 0


def ingest_table(s: dict[str, Any]) -> None:
    t = Table(title="ingest")
    for k in ("files", "read", "accepted", "duplicates", "quarantined", "total_events"):
        t.add_column(k, justify="right")
    t.add_row(*[_fmt(s.get(k)) for k in ("files", "read", "accepted", "duplicates", "quarantined", "total_events")])
    console.print(t)
    for reason, n in sorted((s.get("reasons") or {}).items(), key=lambda x: -x[1])[:10]:
        console.print(f"  quarantined {n} x {reason}")


def cycle_table(s) -> None:
    """One cycle's summary: stage times, the decision and, if it ran, the gate."""
    t = Table(title=f"cycle {s.cycle}: {s.outcome}")
    t.add_column("stage")
    t.add_column("result")
    t.add_column("seconds", justify="right")
    for stage, secs in s.stage_seconds.items():
        t.add_row(stage, s.stage_notes.get(stage, ""), f"{secs:.1f}")
    console.print(t)
    console.print(f"outcome: {s.outcome}", soft_wrap=True, markup=False, highlight=False)  # whole, one line
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
    shown = reg[:3] + (
        [f"(+{len(reg) - 3} more breaches: decision_decide.json in the cycle's MLflow run)"] if len(reg) > 3 else []
    )
    t.add_row("regression found", "\n".join(shown) if reg else "none")
    t.add_row("retrain", last.retrain_note or "not run")
    if last.retrain_objective:
        per = ", ".join(f"{k} {last.retrain_counts.get(k, 0)}" for k in ("sft", "dpo", "kto"))
        t.add_row("objective", f"{last.retrain_objective} (training rows the feedback gave: {per})")
    gate_rows = [
        f"{g['suite']} ({g['role']}): challenger {g['challenger']:.3f} vs champion {g['champion']:.3f}, "
        f"diff {g['diff']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}], n={g['n']}, "
        f"{'pass' if g['passed'] else 'fail'}"
        for g in last.gate_table
    ]
    t.add_row("challenger vs champion", "\n".join(gate_rows) or "not run")
    pref = _win_rate_row(last.gate_findings)
    if pref:
        t.add_row("preference win rate", pref)
    t.add_row("decision", f"{last.outcome}; champion -> version {last.champion_version}")
    total = sum(sum(s.stage_seconds.values()) for s in summaries)
    t.add_row("wall time", f"{total:.0f} s in stages (see the per-stage tables above)")
    console.print(t)
    ui(cfg)


def _win_rate_row(findings: list) -> str:
    """The preference suite's win rate of the chosen reply, champion and challenger (95 % Wilson
    intervals), and the gate's paired estimate of the gain with its interval."""
    from driftloop.core.stats import wilson

    rows = []
    for f in findings:
        if "driftloop_preference" not in (f.metric or "") or f.estimate is None:
            continue
        n = f.n or 0
        _, lo0, hi0 = wilson(round(f.reference * n), n)
        _, lo1, hi1 = wilson(round(f.challenger * n), n)
        conf = f.detail.get("confidence", 0.9)
        rows.append(
            f"champion {f.reference:.3f} [{lo0:.3f}, {hi0:.3f}] -> challenger {f.challenger:.3f} "
            f"[{lo1:.3f}, {hi1:.3f}] (95% Wilson), n={n} pairs; gain {f.estimate:+.3f} "
            f"[{f.ci_low:+.3f}, {f.ci_high:+.3f}] ({conf:.0%} paired), {'pass' if f.passed else 'fail'}"
        )
    return "\n".join(rows)


def ui(cfg: Config) -> None:
    """Print the commands that open the MLflow and Prefect UIs on the stored state: one line each,
    never wrapped (they are meant to be copied), with absolute paths (they work from any folder)."""
    import os
    import shlex
    import sys
    from pathlib import Path

    def tool(name: str) -> str:
        here = Path(sys.executable).with_name(name)
        return shlex.quote(str(here)) if here.exists() else name

    lines = ["Open the stored state:"]
    uri = cfg.tracking_uri
    if uri.startswith(("http://", "https://")):
        lines.append(f"  MLflow UI:  {uri}")
    else:
        lines.append(
            f"  MLflow UI:  {tool('mlflow')} ui --backend-store-uri {shlex.quote(uri)} --port 5000 --workers 1"
        )
    api = os.environ.get("PREFECT_API_URL")
    if api:
        lines.append(f"  Prefect UI: {api.removesuffix('/api')}")
    else:
        # Without an API the commands run the flows as plain Python: Prefect records runs only once one is set.
        home = os.environ.get("PREFECT_HOME") or str(cfg.state_path.resolve() / "prefect")
        lines.append(f"  Prefect UI: PREFECT_HOME={shlex.quote(home)} {tool('prefect')} server start --port 4200")
        lines.append("  (flow runs are recorded there while PREFECT_API_URL=http://127.0.0.1:4200/api is set)")
    print("\n".join(lines))


def status(cfg: Config, history: int = 10) -> None:
    """The loop's state machine: state, since when, why, the lease holder, recent transitions; the aliases."""
    from datetime import datetime
    from pathlib import Path

    from driftloop.store import Store

    path = cfg.store_url
    if path.startswith("sqlite:///") and not Path(path[len("sqlite:///") :]).exists():
        console.print(f"no store yet at {path}: run `driftloop loop` or `driftloop demo` first")
        return
    store = Store(path)
    try:
        st = store.get_state(cfg.project)
        rows = store.history(cfg.project, limit=history)
    finally:
        store.close()
    now = datetime.now(UTC)
    age = (now - st["since"]).total_seconds() / 3600
    console.print(f"state: [bold]{st['state']}[/bold] since {st['since']:%Y-%m-%d %H:%M:%S} UTC ({age:.1f} h ago)")
    console.print(f"why: {st.get('reason') or '-'}", soft_wrap=True, markup=False, highlight=False)
    expires = st["lease_expires"]
    if st["lease_owner"] and expires is not None and expires > now:
        console.print(
            f"lease: held by {st['lease_owner']} until {expires:%H:%M:%S} UTC "
            f"({(expires - now).total_seconds():.0f} s left)"
        )
    elif st["lease_owner"]:
        console.print(f"lease: {st['lease_owner']}'s lease expired at {expires:%H:%M:%S} UTC; the next cycle recovers")
    else:
        console.print("lease: free")
    from driftloop.core.loopstate import LoopMemory

    memory = LoopMemory.load(st.get("data"))
    if memory.last_retrain_at is not None:
        console.print(
            f"retrains in the last 24 h: {memory.recent_retrains(now)}, last at "
            f"{memory.last_retrain_at:%Y-%m-%d %H:%M:%S} UTC"
        )
    if memory.champion is not None:
        console.print(
            f"current window counts: champion version {memory.champion.version}'s traffic "
            f"(tagged with it, or untagged since {memory.champion.since:%Y-%m-%d %H:%M:%S} UTC)"
        )
    if memory.answered is not None:
        console.print(
            f"answered ({memory.answered.outcome}, {memory.answered.at:%Y-%m-%d %H:%M} UTC): "
            f"{', '.join(memory.answered.breach_keys)}; they wait for new feedback",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
    if rows:
        console.print(f"last {len(rows)} transitions, newest first:")
        for h in rows:
            # One line each, never wrapped, so the history can be grepped.
            console.print(
                f"  {h['at']:%Y-%m-%d %H:%M:%S}  {h['from_state']} -> {h['to_state']}  by {h['owner']}: {h['reason']}",
                soft_wrap=True,
                markup=False,
                highlight=False,
            )
    from driftloop.tracking import alias_versions

    aliases = alias_versions(cfg, ("champion", "challenger"))
    for alias, version in aliases.items():
        console.print(f"{alias}: version {version or '-'} of {cfg.tracking.registered_model}")
    from driftloop.services.reconcile import stranded

    half_done = stranded(st, aliases.get("champion"), now)
    if half_done is not None:
        console.print(
            f"reconcile: {half_done.describe()}; the next cycle finishes it (rolls it back if the version is gone)",
            soft_wrap=True,
            markup=False,
        )
