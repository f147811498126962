"""Evaluators by name: each with a spec model of its settings and one `run(spec, inputs)`.

`evaluators.monitoring.monitor_frames` is a loop over this registry: it looks up
"drift", "quality" and "segment_gaps", builds each one's spec from the `MonitorConfig`
(`Evaluator.configure`) and runs it on the two windows. The registry stays, rather than
three direct calls, because it is where each step's settings are derived from the
configuration, once and typed, and because other callers (notebooks, tests, a plugin)
reach the same evaluators by name, with close names suggested for a typo; an evaluator
added here with a spec and a run is one entry away from the monitor pass. "text_drift"
is registered too but is not part of that pass: its inputs, prompt samples, are read
from the store separately (`flows.monitor.text_task`).

An evaluator is also callable on a loose mapping, `evaluator(context) -> list[MetricResult]`,
with these keys (an evaluator reads only what it needs):

- `current` (pd.DataFrame): the window under evaluation, as the store builds it.
- `reference` (pd.DataFrame or WindowProfile): the window it is compared against (drift only).
- `monitor` (MonitorConfig, optional): features, segment fields, drift share; defaults apply.
- `policy` (PolicyConfig, optional): `min_n`; defaults apply.
- `confidence` (float, optional): interval level, default 0.95.
- `reference_texts`, `current_texts` (list[str]): prompt samples of the two windows (text_drift only).
- any field of the evaluator's spec, which then overrides the configured value, e.g.
  `gap_metric` (str) for "segment_gaps" or `columns` (list[str]) for "drift".
- `artifacts` (dict, optional): where an evaluator leaves what is not a MetricResult;
  "drift" puts `drift_report.html` (str), `drift_summary` (dict) and `drift_snapshot`
  (Evidently's Snapshot, or None) there.

Keys are snake_case and match the names used in `driftloop.yaml`.

    >>> names()
    ['drift', 'quality', 'segment_gaps', 'text_drift']
    >>> quality = get("quality")
    >>> spec = quality.configure(MonitorConfig(segment_fields=["topic"]), min_n=30)
    >>> quality.run(spec, Inputs(current=window)).metrics == quality({"current": window})
    True
    >>> get("qualty")
    Traceback (most recent call last):
    UnknownEvaluatorError: unknown evaluator 'qualty'; did you mean 'quality'? (known: drift, quality, segment_gaps, text_drift)

The built-in evaluators import their libraries when they run, so listing names stays
cheap (Evidently alone takes seconds to import).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, Field

from driftloop.core.config import MonitorConfig, PolicyConfig, TextDriftConfig
from driftloop.core.errors import InputError
from driftloop.core.types import MetricResult
from evaluators.drift_spec import DriftSpec

if TYPE_CHECKING:
    import pandas as pd

    from evaluators.drift import DriftOutput
    from evaluators.profiles import WindowProfile

Context = Mapping[str, Any]


class Outcome(Protocol):
    """What an evaluator's run returns: its figures, and whatever else it leaves by name."""

    metrics: list[MetricResult]

    def artifacts(self) -> dict[str, Any]: ...


class Figures(BaseModel):
    """The outcome of an evaluator that yields figures only."""

    metrics: list[MetricResult]

    def artifacts(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Inputs:
    """The data an evaluator reads; each reads only what it needs, through `need`."""

    current: pd.DataFrame | None = None
    reference: pd.DataFrame | WindowProfile | None = None
    current_texts: list[str] | None = None
    reference_texts: list[str] | None = None

    @classmethod
    def of(cls, context: Context) -> Inputs:
        return cls(**{f.name: context.get(f.name) for f in fields(cls)})

    def need(self, key: str) -> Any:
        value = getattr(self, key)
        if value is None:
            have = [f.name for f in fields(self) if getattr(self, f.name) is not None]
            raise InputError(f"evaluator context has no {key!r} (has: {', '.join(have) or 'nothing'})")
        return value


S = TypeVar("S", bound=BaseModel)


class NoSettings(BaseModel):
    """The spec of an evaluator that takes no settings."""

    @classmethod
    def from_monitor(cls, monitor: MonitorConfig, min_n: int, confidence: float) -> NoSettings:
        return cls()


class QualitySpec(BaseModel):
    """Thumbs-up rate, correction rate and mean rating, overall and per segment field."""

    segment_fields: list[str] = Field(default_factory=list)
    min_n: int = Field(default=30, ge=0)
    confidence: float = Field(default=0.95, gt=0, lt=1)

    @classmethod
    def from_monitor(cls, monitor: MonitorConfig, min_n: int = 30, confidence: float = 0.95) -> QualitySpec:
        return cls(segment_fields=list(monitor.segment_fields), min_n=min_n, confidence=confidence)


class SegmentGapsSpec(QualitySpec):
    """Worst-versus-best group gap of `gap_metric`, per segment field."""

    gap_metric: str = "thumbs_up_rate"


class TextDriftSpec(BaseModel):
    """Drift of prompt descriptors and, optionally, embeddings (`MonitorConfig.text`)."""

    text: TextDriftConfig = TextDriftConfig()
    min_n: int = Field(default=30, ge=0)

    @classmethod
    def from_monitor(cls, monitor: MonitorConfig, min_n: int = 30, confidence: float = 0.95) -> TextDriftSpec:
        return cls(text=monitor.text, min_n=min_n)


@dataclass(frozen=True)
class Evaluator(Generic[S]):
    """A registered evaluator: `spec` is its settings model (with a `from_monitor` classmethod)."""

    name: str
    spec: type[S]
    run: Callable[[S, Inputs], Outcome]

    def configure(self, monitor: MonitorConfig, min_n: int = 30, confidence: float = 0.95, **overrides: Any) -> S:
        """The spec for this monitor section, policy `min_n` and interval level; `overrides` win."""
        spec = self.spec.from_monitor(monitor, min_n, confidence)
        return self.spec.model_validate({**spec.model_dump(), **overrides}) if overrides else spec

    def __call__(self, context: Context) -> list[MetricResult]:
        """Run on a loose mapping (see the module docstring); the figures are returned, the rest left in artifacts."""
        policy = context.get("policy") or PolicyConfig()
        spec = self.configure(
            context.get("monitor") or MonitorConfig(),
            policy.min_n,
            float(context.get("confidence", 0.95)),
            **{k: context[k] for k in self.spec.model_fields if k in context},
        )
        out = self.run(spec, Inputs.of(context))
        artifacts = context.get("artifacts")
        if isinstance(artifacts, dict):
            artifacts.update(out.artifacts())
        return out.metrics


_REGISTRY: dict[str, Evaluator[Any]] = {}


class UnknownEvaluatorError(KeyError, InputError):
    """No evaluator has this name; the message suggests the close ones."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


Run = Callable[..., Outcome]


def register(name: str, spec: type[BaseModel] = NoSettings) -> Callable[[Run], Run]:
    """Decorator that files `run(spec, inputs)` under `name` with its spec model; a taken name is an error.

    The function is returned unchanged, so it stays callable and testable on its own.
    """

    def deco(run: Run) -> Run:
        if name in _REGISTRY and _REGISTRY[name].run is not run:
            raise ValueError(f"evaluator {name!r} is already registered")
        _REGISTRY[name] = Evaluator(name, spec, run)
        return run

    return deco


def get(name: str) -> Evaluator[Any]:
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


@register("drift", DriftSpec)
def _drift(spec: DriftSpec, inputs: Inputs) -> DriftOutput:
    """Drift of `spec.columns`, current against reference (a frame or a cached `WindowProfile`);
    large windows take the exact-profile backend (see `evaluators.drift`)."""
    from evaluators.drift import evaluate_drift

    return evaluate_drift(spec, inputs.need("reference"), inputs.need("current"))


@register("quality", QualitySpec)
def _quality(spec: QualitySpec, inputs: Inputs) -> Figures:
    """Thumbs-up rate, correction rate and mean rating of the current window, overall and per segment."""
    from evaluators.quality import quality_metrics

    return Figures(metrics=quality_metrics(inputs.need("current"), spec.segment_fields, spec.min_n, spec.confidence))


@register("segment_gaps", SegmentGapsSpec)
def _segment_gaps(spec: SegmentGapsSpec, inputs: Inputs) -> Figures:
    """Worst-versus-best group gap (thumbs-up rate unless `gap_metric`), per segment field of the current window."""
    from evaluators.quality import segment_gaps

    return Figures(
        metrics=segment_gaps(
            inputs.need("current"),
            spec.segment_fields,
            metric=spec.gap_metric,
            min_n=spec.min_n,
            confidence=spec.confidence,
        )
    )


@register("text_drift", TextDriftSpec)
def _text_drift(spec: TextDriftSpec, inputs: Inputs) -> Figures:
    """Drift of prompt descriptors and (with the `embeddings` extra) prompt embeddings, per `spec.text`."""
    from evaluators.text_drift import text_drift

    return Figures(
        metrics=text_drift(
            list(inputs.need("reference_texts")), list(inputs.need("current_texts")), spec.text, spec.min_n
        )
    )
