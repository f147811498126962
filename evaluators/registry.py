"""Evaluators by name: a small registry, so flows and the CLI wire steps by key, not by import.

An evaluator is a plain function `run(context) -> list[MetricResult]`. The context is a
mapping with these keys (an evaluator reads only what it needs):

- `current` (pd.DataFrame): the window under evaluation, as the store builds it.
- `reference` (pd.DataFrame): the window it is compared against (drift only).
- `monitor` (MonitorConfig, optional): features, segment fields, drift share; defaults apply.
- `policy` (PolicyConfig, optional): `min_n`; defaults apply.
- `confidence` (float, optional): interval level, default 0.95.
- `gap_metric` (str, optional): the metric "segment_gaps" compares, default "thumbs_up_rate".
- `reference_texts`, `current_texts` (list[str]): prompt samples of the two windows (text_drift only).
- `artifacts` (dict, optional): where an evaluator leaves what is not a MetricResult;
  "drift" puts `drift_report.html` (str), `drift_summary` (dict) and `drift_snapshot`
  (Evidently's Snapshot, or None) there.

Keys are snake_case and match the names used in `driftloop.yaml`.

    >>> names()
    ['drift', 'quality', 'segment_gaps', 'text_drift']
    >>> results = get("quality")({"current": window})
    >>> get("qualty")
    Traceback (most recent call last):
    UnknownEvaluatorError: unknown evaluator 'qualty'; did you mean 'quality'? (known: drift, quality, segment_gaps, text_drift)

The built-in evaluators import their libraries when they run, so listing names stays
cheap (Evidently alone takes seconds to import).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from driftloop.config import MonitorConfig, PolicyConfig
from driftloop.errors import InputError
from driftloop.types import MetricResult

Context = Mapping[str, Any]
Evaluator = Callable[[Context], list[MetricResult]]

_REGISTRY: dict[str, Evaluator] = {}


class UnknownEvaluatorError(KeyError, InputError):
    """No evaluator has this name; the message suggests the close ones."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def register(name: str) -> Callable[[Evaluator], Evaluator]:
    """Decorator that files `fn` under `name`; registering a taken name is an error.

    The function is returned unchanged, so it stays callable and testable on its own.
    """

    def deco(fn: Evaluator) -> Evaluator:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"evaluator {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def get(name: str) -> Evaluator:
    """The evaluator registered as `name`; UnknownEvaluatorError (a KeyError) names close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownEvaluatorError(f"unknown evaluator {name!r}{hint} (known: {', '.join(names())})") from None


def names() -> list[str]:
    """Registered evaluator names, sorted."""
    return sorted(_REGISTRY)


def _need(context: Context, key: str) -> Any:
    if key not in context:
        raise InputError(f"evaluator context has no {key!r} (has: {', '.join(sorted(context)) or 'nothing'})")
    return context[key]


def _settings(context: Context) -> tuple[MonitorConfig, PolicyConfig, float]:
    return (
        context.get("monitor") or MonitorConfig(),
        context.get("policy") or PolicyConfig(),
        float(context.get("confidence", 0.95)),
    )


@register("drift")
def _drift(context: Context) -> list[MetricResult]:
    """Evidently drift of `monitor.features`, current against reference (a frame or a cached
    `WindowProfile`); large windows take the exact-profile path (see `evaluators.drift_large`)."""
    from evaluators.drift import drift_report

    monitor, policy, _ = _settings(context)
    out = drift_report(
        _need(context, "reference"),
        _need(context, "current"),
        list(monitor.features),
        drift_share=monitor.drift_share_alert,
        min_n=policy.min_n,
        exact_rows=monitor.exact_rows,
        report_rows=monitor.report_rows,
    )
    artifacts = context.get("artifacts")
    if isinstance(artifacts, dict):
        artifacts["drift_report.html"] = out.html
        artifacts["drift_summary"] = out.summary
        artifacts["drift_snapshot"] = out.snapshot
    return out.metrics


@register("text_drift")
def _text_drift(context: Context) -> list[MetricResult]:
    """Drift of prompt descriptors and (with the `embeddings` extra) prompt embeddings, per `monitor.text`."""
    from evaluators.text_drift import text_drift

    monitor, policy, _ = _settings(context)
    return text_drift(list(_need(context, "reference_texts")), list(_need(context, "current_texts")),
                      monitor.text, policy.min_n)


@register("quality")
def _quality(context: Context) -> list[MetricResult]:
    """Thumbs-up rate, correction rate and mean rating of the current window, overall and per segment."""
    from evaluators.quality import quality_metrics

    monitor, policy, confidence = _settings(context)
    return quality_metrics(_need(context, "current"), list(monitor.segment_fields), policy.min_n, confidence)


@register("segment_gaps")
def _segment_gaps(context: Context) -> list[MetricResult]:
    """Worst-versus-best group gap (thumbs-up rate unless `gap_metric`), per segment field of the current window."""
    from evaluators.quality import segment_gaps

    monitor, policy, confidence = _settings(context)
    return segment_gaps(
        _need(context, "current"),
        list(monitor.segment_fields),
        metric=str(context.get("gap_metric", "thumbs_up_rate")),
        min_n=policy.min_n,
        confidence=confidence,
    )
