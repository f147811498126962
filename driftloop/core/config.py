"""One typed configuration root for `driftloop.yaml`.

Precedence: defaults < YAML < `DRIFTLOOP_*` environment variables < CLI flags.
An environment variable names a key path with `__` between levels, e.g.
`DRIFTLOOP_POLICY__ALPHA=0.01` or `DRIFTLOOP_STORE__URL=postgresql+psycopg://...`.
Every model forbids unknown keys, so a typo is an error that names its path.

    >>> cfg = load_config("driftloop.yaml")
    >>> cfg.policy.alpha
    0.05

Relative paths in the file are resolved against the file's own folder.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, create_model, model_validator

from driftloop.core.config_base import ENV_PREFIX, _Section, read_layers
from driftloop.core.config_eval import (
    BenchmarkConfig,
    GoldenConfig,
    MonitorConfig,
    SuiteConfig,
    TaskSpec,
    TextDriftConfig,
    WindowConfig,
)

# Sections kept in modules of their own, re-exported: `from driftloop.core.config import FileSource` still works.
from driftloop.core.config_ingest import AnySource, ApiConfig, FieldMapping, FileSource, RedactionConfig, SqlSource
from driftloop.core.config_judges import Judges, JudgeSpec
from driftloop.core.config_ops import AlertEventType, AlertsConfig, RunnerConfig, WebhookConfig
from driftloop.core.config_retention import RetentionConfig

__all__ = [
    "ENV_PREFIX",
    "RESERVED_ENV",
    "DEMO_MODEL",
    "AlertEventType",
    "AlertsConfig",
    "AnySource",
    "ApiConfig",
    "BenchmarkConfig",
    "Config",
    "FieldMapping",
    "FileSource",
    "GoldenConfig",
    "JudgeSpec",
    "ModelConfig",
    "MonitorConfig",
    "PolicyConfig",
    "RedactionConfig",
    "RetrainConfig",
    "RunnerConfig",
    "SqlSource",
    "StoreConfig",
    "SuiteConfig",
    "TaskSpec",
    "TextDriftConfig",
    "TrackingConfig",
    "WebhookConfig",
    "WindowConfig",
    "check_config_files",
    "load_config",
    "looks_like_path",
]
from driftloop.core.errors import ConfigError
from driftloop.core.loopstate import MAX_BREACHES
from retrain.params import TrainingParams, training_fields

# Environment variables with the prefix that are not config keys.
RESERVED_ENV = {"DRIFTLOOP_CONFIG", "DRIFTLOOP_LOG_LEVEL", "DRIFTLOOP_HOME"}
DEMO_MODEL = "demo"


class StoreConfig(_Section):
    url: str | None = Field(
        default=None, description="SQLAlchemy URL of the feedback store; default: SQLite file `<state_dir>/store.db`."
    )


class TrackingConfig(_Section):
    uri: str | None = Field(
        default=None, description="MLflow tracking URI; default: `sqlite:///<state_dir>/mlflow.db`."
    )
    artifact_location: str | None = Field(
        default=None,
        description="Artifact root for new experiments; default: `<state_dir>/mlartifacts`, or the server's own store when `uri` is an http(s) tracking server.",
    )
    experiment: str = Field(default="driftloop", description="MLflow experiment that holds every cycle's runs.")
    registered_model: str = Field(default="driftloop-model", description="Name of the model in the MLflow registry.")


class ModelConfig(_Section):
    base: str = Field(
        default=DEMO_MODEL,
        description="`demo` (build the offline demo model), a local path, or a Hugging Face model id already in the local cache.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Device for evaluation and training.")


class PolicyConfig(_Section):
    version: str = Field(default="1", description="Recorded with each decision.")
    alpha: float = Field(
        default=0.05, gt=0, lt=1, description="Significance level of every test (after Holm correction)."
    )
    min_n: int = Field(default=30, ge=1, description="Below this many observations a verdict is 'insufficient data'.")
    floors: dict[str, float] = Field(
        default_factory=lambda: {"thumbs_up_rate": 0.7, "mean_rating": 0.6},
        description="Absolute floors by metric name: a breach is a one-sided test, significant at alpha "
        "after Holm, that the true value is below the floor.",
    )
    max_drop: dict[str, float] = Field(
        default_factory=lambda: {"thumbs_up_rate": 0.10},
        description="Largest tolerated absolute drop from the reference window, by metric name "
        "(a breach: the drop exceeds it, one-sided, Holm).",
    )
    relative_drop: dict[str, float] = Field(
        default_factory=dict,
        description="Largest tolerated drop as a fraction of the champion's baseline value, by metric name "
        "(0.1 = a 10% fall from the value recorded when the champion took over).",
    )
    min_improvement: float = Field(
        default=0.0,
        ge=0,
        description="Challenger must beat the champion on target suites by more than this (one-sided test).",
    )
    margins: dict[str, float] = Field(
        default_factory=lambda: {"canary": 0.05, "bias": 0.02},
        description="Absolute non-inferiority margins by suite role, for metrics bounded in [0, 1] (accuracies, "
        "rates); a metric on another scale needs its own `margin` (benchmark.suites.*.tasks[].margin) "
        "or a relative margin, else the gate gives no verdict on it.",
    )
    relative_margins: dict[str, float] = Field(
        default_factory=dict,
        description="Non-inferiority margins by suite role as a fraction of the champion's score; "
        "they override `margins` for that role.",
    )
    lease_seconds: float = Field(
        default=3600,
        gt=0,
        description="Lease a cycle holds on the loop state, in seconds; "
        "must outlast the longest stage (retrain), or another cycle may take over.",
    )
    debounce_m: int = Field(default=1, ge=1, description="M of the last N windows must breach.")
    debounce_n: int = Field(
        default=1,
        ge=1,
        le=MAX_BREACHES,
        description=f"N of debounce: the windows looked back on (the loop keeps the last {MAX_BREACHES}).",
    )
    cooldown_hours: float = Field(default=0.0, ge=0, description="Minimum time between retrains.")
    max_retrains_per_day: int = Field(default=3, ge=0, description="Retrain budget.")
    max_training_hours_per_day: float | None = Field(
        default=None,
        gt=0,
        description="Retrain budget in resources: no retrain starts while the fine-tunes of the last 24 h trained this many hours or more (their training wall time; GPU-hours where retrains run on a GPU, which a fine-tune holds throughout). None: the budget counts runs only (`max_retrains_per_day`).",
    )
    retrain_via: Literal["inline", "event"] = Field(
        default="inline",
        description="How a RETRAIN decision runs: `inline` fine-tunes, gates and promotes inside the `loop` flow; "
        "`event` moves the loop to `triggered` and emits the Prefect event "
        "`driftloop.regression.detected`, whose automation (prefect.yaml) runs the `retrain/gpu` "
        "deployment to finish the cycle.",
    )

    @model_validator(mode="after")
    def _debounce(self) -> PolicyConfig:
        if self.debounce_m > self.debounce_n:
            raise ValueError(f"debounce_m ({self.debounce_m}) must not exceed debounce_n ({self.debounce_n})")
        for name, fractions in (("relative_drop", self.relative_drop), ("relative_margins", self.relative_margins)):
            bad = {k: v for k, v in fractions.items() if not 0 < v < 1}
            if bad:
                raise ValueError(f"{name} {bad}: each fraction must be between 0 and 1")
        return self

    def margin_for(self, role: str, champion_score: float) -> float:
        """The non-inferiority margin of a suite role, given the champion's score on it."""
        if role in self.relative_margins:
            return self.relative_margins[role] * abs(champion_score)
        return self.margins.get(role, 0.0)


class _RetrainBase(_Section):
    """What the loop needs besides the training hyperparameters, and the hook that checks them."""

    min_train_items: int = Field(
        default=1,
        ge=1,
        description="Fewest corrected training-pool items a retrain needs; with fewer, a regression is recorded as 'nothing to train on', alerted (retrain.skipped) and the loop cools down.",
    )
    replay_fraction: float = Field(
        default=0.5, ge=0, le=1, description="Share of earlier training data mixed into each fine-tune."
    )

    def training_params(self) -> dict[str, Any]:
        """The hyperparameters as `RetrainSpec` keyword arguments."""
        return {f.name: getattr(self, f.name) for f in training_fields()}

    @model_validator(mode="after")
    def _in_range(self) -> _RetrainBase:
        TrainingParams(**self.training_params()).check()  # one set of range rules, the job's own
        return self


def _field(f: dataclasses.Field, hint: Any) -> tuple[Any, Any]:
    doc = f.metadata.get("doc", "")
    if f.default_factory is not dataclasses.MISSING:
        return hint, Field(default_factory=f.default_factory, description=doc)
    return hint, Field(default=f.default, description=doc)


# The `retrain:` section: the training hyperparameters are TrainingParams' own fields (one definition,
# shared with the job spec a GPU worker reads), plus the loop's settings above.
if typing.TYPE_CHECKING:

    class RetrainConfig(_RetrainBase):
        def __getattr__(self, name: str) -> Any: ...  # the TrainingParams fields
else:
    _HINTS = typing.get_type_hints(TrainingParams)
    RetrainConfig = create_model(
        "RetrainConfig",
        __base__=_RetrainBase,
        __module__=__name__,
        **{f.name: _field(f, _HINTS[f.name]) for f in training_fields()},
    )
    RetrainConfig.__doc__ = "How to fine-tune (the job's TrainingParams) and what the loop needs to start one."


class Config(_Section):
    """The whole `driftloop.yaml`."""

    project: str = Field(default="driftloop", description="Name shown in tables and dashboards.")
    state_dir: str = Field(
        default=".driftloop", description="Folder for local state: SQLite store, MLflow, models, reports."
    )
    store: StoreConfig = StoreConfig()
    tracking: TrackingConfig = TrackingConfig()
    model: ModelConfig = ModelConfig()
    sources: list[AnySource] = Field(
        default_factory=list,
        description="Where feedback comes from: `files` (glob) and `sql` (table or query read by a watermark).",
    )
    redaction: RedactionConfig = RedactionConfig()
    api: ApiConfig = ApiConfig()
    monitor: MonitorConfig = MonitorConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    golden: GoldenConfig = GoldenConfig()
    policy: PolicyConfig = PolicyConfig()
    retrain: RetrainConfig = RetrainConfig()
    runner: RunnerConfig = Field(
        default_factory=RunnerConfig,
        description="Where benchmark suites run: serially in the flow, or one per Dask worker.",
    )
    alerts: AlertsConfig = AlertsConfig()
    retention: RetentionConfig = RetentionConfig()
    judges: Judges = Field(
        default_factory=list,
        description="Models that rate responses where no human did; used once calibrated on human labels (docs/concepts/judges.md).",
    )

    # Resolved after loading; not part of the file.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    def path(self, p: str | Path) -> Path:
        """Resolve a config path against the config file's folder."""
        p = Path(os.path.expanduser(str(p)))
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def state_path(self) -> Path:
        return self.path(self.state_dir)

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.state_path / 'store.db'}"

    @property
    def tracking_uri(self) -> str:
        return self.tracking.uri or f"sqlite:///{self.state_path / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str | None:
        """Artifact root for a new experiment; None lets a tracking server choose (it proxies artifacts)."""
        loc = self.tracking.artifact_location
        if loc and "://" in loc:
            return loc
        if not loc and self.tracking_uri.startswith(("http://", "https://")):
            return None
        return str(self.path(loc) if loc else self.state_path / "mlartifacts")

    def source_files(self) -> list[Path]:
        """Every file the sources match, sorted, so ingestion order is stable."""
        files: list[Path] = []
        for s in self.sources:
            if s.kind == "files":
                files.extend(Path(p) for p in sorted(glob.glob(str(self.path(s.path)))))
        return files


def _format_error(origin: str, err: ValidationError) -> str:
    errs = err.errors()
    first = errs[0]
    loc = ".".join(str(x) for x in first["loc"]) or "(root)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{origin}: {loc}: {msg}{more}"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
    check_files: bool = True,
) -> Config:
    """Load, merge and validate the configuration; raise ConfigError with a one-line message.

    `path` None means `$DRIFTLOOP_CONFIG` or `./driftloop.yaml`; where neither exists the
    defaults are used. The layers, each read by a pydantic-settings source, are merged
    key by key: defaults < the YAML file < DRIFTLOOP_* variables of `env` (default
    os.environ) < `overrides`; the result is validated once, so an error names its key
    path whichever layer set it. `check_files` also verifies that the model path and the
    source files exist. Nothing is written.
    """
    env = os.environ if env is None else env
    explicit = path is not None or "DRIFTLOOP_CONFIG" in env
    cfg_path = Path(path or env.get("DRIFTLOOP_CONFIG") or "driftloop.yaml")
    if explicit and not cfg_path.exists():
        raise ConfigError(f"{cfg_path}: config file not found")
    data, env_part, over_part = read_layers(
        Config, cfg_path if cfg_path.exists() else None, env, overrides or {}, frozenset(RESERVED_ENV)
    )
    origin = str(cfg_path)
    if env_part:
        data = _merge(data, env_part)
        origin = f"{cfg_path} (+DRIFTLOOP_* env)"
    data = _merge(data, over_part)
    if "base_dir" in data:
        raise ConfigError(f"{origin}: base_dir: unknown key")
    try:
        cfg = Config.model_validate({**data, "base_dir": cfg_path.resolve().parent})
    except ValidationError as e:
        raise ConfigError(_format_error(origin, e)) from None
    if check_files:
        check_config_files(cfg, origin)
    return cfg


def looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or os.sep in ref and not _is_hub_id(ref)


def _is_hub_id(ref: str) -> bool:
    # "org/name" with exactly one slash and no path-ish characters.
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "/", "~"))


def check_config_files(cfg: Config, origin: str = "driftloop.yaml", sources: bool = True) -> None:
    """Verify that the files the config names exist (model path, source files unless `sources` is False)."""
    base = cfg.model.base
    if base != DEMO_MODEL and (looks_like_path(base) or cfg.path(base).exists()):
        if not cfg.path(base).exists():
            raise ConfigError(f"{origin}: model.base: model path does not exist: {cfg.path(base)}")
    for i, s in enumerate(cfg.sources if sources else []):
        if s.kind == "files" and not glob.glob(str(cfg.path(s.path))):
            raise ConfigError(f"{origin}: sources.{i}.path: no file matches {cfg.path(s.path)}")
    for name, suite in cfg.benchmark.suites.items():
        for j, t in enumerate(suite.tasks):
            if t.data_dir and not cfg.path(t.data_dir).is_dir():
                raise ConfigError(
                    f"{origin}: benchmark.suites.{name}.tasks.{j}.data_dir: folder does not exist: {cfg.path(t.data_dir)}"
                )
    for i, w in enumerate(cfg.alerts.webhooks):
        # Only whether the secret is there: its value is never read into a message.
        if w.secret_env is not None and not os.environ.get(w.secret_env):
            raise ConfigError(
                f"{origin}: alerts.webhooks.{i}.secret_env: environment variable {w.secret_env} is not set"
            )
        if w.secret_file is not None and not os.access(cfg.path(w.secret_file), os.R_OK):
            raise ConfigError(f"{origin}: alerts.webhooks.{i}.secret_file: cannot read {cfg.path(w.secret_file)}")
