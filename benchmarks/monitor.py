"""Benchmark: driftloop's monitor against Evidently's drift preset on the same million-row windows.

Generates a reference and a current window of `--rows` events each, shaped like the
store's window frames, with 20 drift features (the 6 default features and 14 segment
fields) and a known shift in 3 of them: latency_ms (log-normal, +0.3 in log space),
prompt_len (+20%) and topic (a different mix). Then, in one process:

1. driftloop's monitor (`evaluators.monitoring.monitor_frames`: drift of all 20 columns
   plus quality of both windows and segment gaps), timed, with the peak RSS so far;
2. the same with the reference profile already cached (what every later run costs);
3. Evidently's DataDriftPreset on the full frames (Report.run and the result dict, no
   HTML, so the baseline does the least work it can), timed.

It prints both times, the ratio, the peak RSS after driftloop's part and whether the
per-column drift verdicts agree. Run it alone (it needs both cores for ~4 minutes):

    .venv/bin/python benchmarks/monitor.py              # 1,000,000 events per window
    .venv/bin/python benchmarks/monitor.py --rows 200000 --json out.json

`--store` instead times the whole `monitor` flow end to end on a SQLite store holding
2 x `--rows` events (inserted with SQLAlchemy Core, not the ingest path; segment fields
topic, locale and tier; windows of `--rows` events each by count), run twice: the first
run reads and profiles both windows, the second finds the reference profile cached.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datetime import UTC

from driftloop.core.config import MonitorConfig  # noqa: E402
from evaluators.drift_evidently import as_category as _as_category  # noqa: E402
from evaluators.monitoring import drift_columns, monitor_frames  # noqa: E402
from evaluators.profiles import is_numerical  # noqa: E402

SEGMENTS = [
    "topic",
    "locale",
    "tier",
    "channel",
    "device",
    "region",
    "plan",
    "language",
    "source",
    "client",
    "country",
    "product",
    "team",
    "queue",
]
SHIFTED = {"latency_ms", "prompt_len", "topic"}


def window(n: int, seed: int, shift: bool) -> pd.DataFrame:
    """A window frame like `Store.read_window`'s; `shift` moves latency_ms, prompt_len and topic."""
    rng = np.random.default_rng(seed)
    tokens_in = rng.poisson(80, n).astype(float)
    frame = {
        "event_id": np.arange(n).astype(str).astype(object),
        "ts": pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 86_400, n)), unit="s"),
        "model_version": rng.choice(np.array(["3", "4"], dtype=object), n, p=[0.9, 0.1]),
        "prompt_len": rng.poisson(360 if shift else 300, n).astype(np.int64),
        "response_len": rng.poisson(800, n).astype(np.int64),
        "latency_ms": rng.lognormal(6.3 if shift else 6.0, 0.5, n),
        "tokens_in": tokens_in,
        "tokens_out": rng.poisson(200, n).astype(float),
        "rating": rng.choice([0.0, 0.25, 0.5, 0.75, 1.0, np.nan], n),
        "thumbs_up": rng.choice([1.0, 0.0, np.nan], n, p=[0.6, 0.3, 0.1]),
        "has_correction": rng.random(n) < 0.1,
    }
    topics = np.array(["billing", "account", "shipping", "returns", "other"], dtype=object)
    frame["topic"] = rng.choice(topics, n, p=[0.4, 0.15, 0.15, 0.15, 0.15] if shift else [0.2] * 5)
    for i, seg in enumerate(SEGMENTS[1:]):
        frame[seg] = rng.choice(np.array([f"{seg}-{j}" for j in range(3 + i % 5)], dtype=object), n)
    return pd.DataFrame(frame)


def evidently_verdicts(ref: pd.DataFrame, cur: pd.DataFrame, cols: list[str]) -> dict[str, dict]:
    """Evidently's DataDriftPreset on the full frames, typed as driftloop types them; per-column verdicts."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    num = [c for c in cols if is_numerical(c, ref[c])]
    cat = [c for c in cols if c not in num]
    r = pd.DataFrame({c: ref[c] if c in num else _as_category(ref[c]) for c in cols})
    k = pd.DataFrame({c: cur[c] if c in num else _as_category(cur[c]) for c in cols})
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        snap = Report([DataDriftPreset(columns=num + cat)], include_tests=True).run(
            Dataset.from_pandas(k, data_definition=definition), Dataset.from_pandas(r, data_definition=definition)
        )
        result = snap.dict()
    out: dict[str, dict] = {}
    for m in result["metrics"]:
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith(":ValueDrift"):
            out[cfg["column"]] = {"score": float(m["value"]), "method": cfg.get("method")}
    for t in result["tests"]:
        col = t.get("metric_config", {}).get("params", {}).get("column")
        if t.get("id") == "drift" and col in out:
            out[col]["drifted"] = str(t.get("status", "")).upper().endswith("FAIL")
    return out


def store_run(rows: int) -> dict:
    """The monitor flow end to end on a SQLite store of 2 x `rows` events; see the module docstring."""
    import tempfile
    from datetime import datetime, timedelta

    from prefect.testing.utilities import prefect_test_harness

    from driftloop.core.config import load_config
    from driftloop.store import Store
    from driftloop.store.models import Feedback

    tmp = Path(tempfile.mkdtemp(prefix="driftloop-bench-"))
    cfg_path = tmp / "driftloop.yaml"
    cfg_path.write_text(f"""
project: bench
state_dir: state
monitor:
  segment_fields: [topic, locale, tier]
  windows: {{slide_by: events, current_events: {rows}, reference_events: {rows}}}
""")
    cfg = load_config(cfg_path)
    cfg.state_path.mkdir(parents=True)
    store = Store(cfg.store_url)
    store.migrate()
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    t = time.perf_counter()
    with store._writer.begin() as conn:
        for half, (seed, shift) in enumerate(((1, False), (2, True))):
            f = window(rows, seed, shift)
            for start in range(0, rows, 50_000):
                part = f.iloc[start : start + 50_000]
                conn.execute(
                    Feedback.__table__.insert(),
                    [
                        {
                            "event_id": f"{half}-{start + i}",
                            "ts": t0 + timedelta(seconds=half * rows + start + i),
                            "model_version": r.model_version,
                            "prompt": "p" * int(r.prompt_len),
                            "response": "r" * int(r.response_len),
                            "rating": None if np.isnan(r.rating) else r.rating,
                            "thumbs_up": None if np.isnan(r.thumbs_up) else bool(r.thumbs_up),
                            "correction": "fixed" if r.has_correction else None,
                            "segment": {"topic": r.topic, "locale": r.locale, "tier": r.tier},
                            "latency_ms": r.latency_ms,
                            "tokens_in": int(r.tokens_in),
                            "tokens_out": int(r.tokens_out),
                            "meta": {},
                            "source": "bench",
                            "ingested_at": t0,
                            "rating_raw": None,
                        }
                        for i, r in enumerate(part.itertuples(index=False))
                    ],
                )
    res: dict = {"rows_per_window": rows, "insert_s": time.perf_counter() - t}
    store.close()
    print(f"inserted 2 x {rows:,} events in {res['insert_s']:.0f} s", flush=True)
    from flows.common import StageParams
    from flows.monitor import monitor

    try:
        with prefect_test_harness(server_startup_timeout=180):
            for name in ("first_run", "cached_reference_run"):
                t = time.perf_counter()
                out = monitor(StageParams(config=str(cfg_path)))
                res[f"{name}_s"] = time.perf_counter() - t
                res[f"{name}_parts_s"] = out.seconds
                res[f"{name}_reference_cached"] = out.reference_cached
                res[f"{name}_n"] = [out.n_reference, out.n_current]
                res[f"{name}_peak_rss_gb"] = peak_rss_gb()
                drifted = [m.segment["column"] for m in out.drift if m.name == "drift_score" and m.passed is False]
                res[f"{name}_drifted"] = drifted
                print(
                    f"monitor flow ({name}): {res[f'{name}_s']:.1f} s, reference cached: {out.reference_cached}, "
                    f"n={res[f'{name}_n']}, drifted {drifted}, peak RSS {res[f'{name}_peak_rss_gb']:.2f} GB",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # 2 x 1M events take about 2.7 GB
    return res


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="events per window")
    ap.add_argument("--skip-evidently", action="store_true", help="time driftloop only")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--store", action="store_true", help="time the monitor flow end to end on a SQLite store")
    args = ap.parse_args(argv)
    if args.store:
        res = store_run(args.rows)
        print(json.dumps(res, indent=1, default=str))
        if args.json:
            args.json.write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
        return 0

    mon = MonitorConfig(segment_fields=SEGMENTS)
    cols = drift_columns(mon)
    assert len(cols) == 20, cols
    t = time.perf_counter()
    ref, cur = window(args.rows, 1, False), window(args.rows, 2, True)
    res: dict = {
        "rows_per_window": args.rows,
        "features": len(cols),
        "generate_s": time.perf_counter() - t,
        "rss_after_generate_gb": peak_rss_gb(),
    }
    print(f"generated 2 x {args.rows:,} events in {res['generate_s']:.1f} s", flush=True)

    t = time.perf_counter()
    out = monitor_frames(ref, cur, mon, min_n=30)
    res["driftloop_s"] = time.perf_counter() - t
    res["driftloop_parts_s"] = out.seconds
    res["driftloop_peak_rss_gb"] = peak_rss_gb()
    print(
        f"driftloop monitor (drift + quality + bias): {res['driftloop_s']:.1f} s, peak RSS {res['driftloop_peak_rss_gb']:.2f} GB",
        flush=True,
    )
    t = time.perf_counter()
    monitor_frames(out.reference_profile, cur, mon, min_n=30, reference_quality=out.reference)
    res["driftloop_cached_reference_s"] = time.perf_counter() - t
    print(
        f"driftloop monitor with the cached reference profile: {res['driftloop_cached_reference_s']:.1f} s", flush=True
    )
    ours = out.drift.summary["columns"]
    res["driftloop_drifted"] = sorted(c for c in ours if ours[c]["drifted"])
    res["max_error_bound"] = max(v.get("error_bound", 0.0) for v in ours.values())

    if not args.skip_evidently:
        t = time.perf_counter()
        theirs = evidently_verdicts(ref, cur, cols)
        res["evidently_s"] = time.perf_counter() - t
        res["ratio"] = res["evidently_s"] / res["driftloop_s"]
        res["evidently_drifted"] = sorted(c for c in theirs if theirs[c].get("drifted"))
        res["verdicts_agree"] = all(ours[c]["drifted"] == theirs[c].get("drifted") for c in cols) and set(ours) == set(
            cols
        )
        res["max_abs_score_diff"] = max(abs(ours[c]["score"] - theirs[c]["score"]) for c in cols)
        print(
            f"Evidently DataDriftPreset on the full frames: {res['evidently_s']:.1f} s; ratio {res['ratio']:.1f}x",
            flush=True,
        )
        print(
            f"per-column verdicts agree: {res['verdicts_agree']} (driftloop {res['driftloop_drifted']}, "
            f"Evidently {res['evidently_drifted']}); largest score difference {res['max_abs_score_diff']:.2e}"
        )
    res["expected_drifted"] = sorted(SHIFTED)
    print(json.dumps(res, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
