"""The only module that talks to MLflow: runs, metrics, artifacts and the registry.

Every call names its run explicitly (no implicit "active run"), so stages may
run in Prefect worker threads or other processes without losing their parent.

    >>> tr = Tracker.from_config(cfg)
    >>> parent = tr.start_run("cycle-2026-11-08", tags={"driftloop.kind": "cycle"})
    >>> child = tr.start_run("monitor", parent=parent)
    >>> tr.log_metric_results(child, metrics)
    >>> tr.end_run(child); tr.end_run(parent)
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from datetime import UTC
from pathlib import Path
from typing import Any

from driftloop.core import tags as T
from driftloop.core.errors import InputError
from driftloop.core.types import Decision, MetricResult
from driftloop.tracking.keys import BAD_KEY as _BAD_KEY

logging.getLogger("mlflow").setLevel(logging.WARNING)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def metric_key(m: MetricResult) -> str:
    """MLflow key of a MetricResult: `source/name` plus `/k:v` per segment entry."""
    key = f"{m.source}/{m.name}"
    for k, v in sorted(m.segment.items()):
        key += f"/{k}:{v}"
    return _BAD_KEY.sub("_", key)[:250]


def _init_lock(uri: str) -> Any:
    """An exclusive lock on `<db>.init.lock` for a SQLite tracking URI (a no-op for others)."""
    import contextlib

    from filelock import FileLock

    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    return FileLock(uri[len("sqlite:///") :] + ".init.lock", timeout=300)


class Tracker:
    """Thin wrapper over `MlflowClient` bound to one tracking URI, experiment and model name."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        model_name: str,
        artifact_location: str | None = None,
        cache_dir: str | Path | None = None,
        prompt_template: str = "Q: {prompt}\nA:",
    ):
        import mlflow
        from mlflow import MlflowClient

        self._mlflow = mlflow
        self.uri = uri
        self.model_name = model_name
        self.prompt_template = prompt_template  # what a served version puts around each prompt
        self.cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "driftloop-models"
        # MLflow creates and migrates a fresh SQLite file's tables when its client first opens it,
        # unguarded: two processes that start on a fresh state folder at once race it ("table ...
        # already exists"). A file lock beside the database serialises that and the experiment's creation.
        with _init_lock(uri):
            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                if artifact_location and "://" not in artifact_location:
                    Path(artifact_location).mkdir(parents=True, exist_ok=True)
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
            else:
                self.experiment_id = exp.experiment_id
                self._follow_move(artifact_location, exp.artifact_location)

    def _follow_move(self, artifact_location: str | None, recorded: str) -> None:
        """Where the state folder was moved or copied, rewrite MLflow's recorded artifact paths to
        its new place (`driftloop.tracking.relocate`), so this copy reads and writes its own files."""
        from driftloop.tracking.relocate import moved_from, relocate

        moved = moved_from(self.uri, artifact_location, recorded)
        if moved:
            done = relocate(self.uri, *moved)
            logging.getLogger("driftloop").warning(
                "state folder moved from %s to %s: %d MLflow artifact paths rewritten", done.old, done.new, done.rows
            )

    @classmethod
    def from_config(cls, cfg) -> Tracker:
        if cfg.tracking_uri.startswith("sqlite:///"):
            Path(cfg.tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        return cls(
            cfg.tracking_uri,
            cfg.tracking.experiment,
            cfg.tracking.registered_model,
            cfg.artifact_location,
            cfg.state_path / "models",
            cfg.retrain.prompt_template,
        )

    # -- runs -------------------------------------------------------------
    def start_run(self, name: str, parent: str | None = None, tags: dict[str, str] | None = None) -> str:
        """Create a run (nested under `parent` when given) and return its id."""
        t = dict(tags or {})
        if parent:
            t["mlflow.parentRunId"] = parent
        return self.client.create_run(self.experiment_id, run_name=name, tags=t).info.run_id

    def end_run(self, run_id: str, failed: bool = False) -> None:
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")

    def run_url(self, run_id: str) -> str:
        """Path of the run in the MLflow UI (prefix with the UI's address)."""
        return f"#/experiments/{self.experiment_id}/runs/{run_id}"

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v)[:5000])

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_BAD_KEY.sub("_", k)[:250], float(v), now, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i : i + 500])

    def log_metric_results(self, run_id: str, results: Iterable[MetricResult], artifact: str = "metrics.json") -> None:
        """Log each result's value and interval as metrics, and all of them verbatim as JSON."""
        results = list(results)
        flat: dict[str, float] = {}
        for m in results:
            if m.value is None:
                continue
            k = metric_key(m)
            flat[k] = m.value
            if m.ci_low is not None and m.ci_high is not None:
                flat[k + "/ci_low"] = m.ci_low
                flat[k + "/ci_high"] = m.ci_high
        self.log_metrics(run_id, flat)
        self.log_dict(run_id, [m.model_dump(mode="json") for m in results], artifact)

    def log_dict(self, run_id: str, obj: Any, artifact_file: str) -> None:
        self.client.log_dict(run_id, obj, artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_artifacts(
        self, run_id: str, local_dir: str | Path, artifact_path: str | None = None, skip: tuple[str, ...] = ()
    ) -> None:
        """Log a folder's files; top-level entries named in `skip` are left out."""
        if not skip:
            self.client.log_artifacts(run_id, str(local_dir), artifact_path)
            return
        for p in sorted(Path(local_dir).iterdir()):
            if p.name in skip:
                continue
            if p.is_dir():
                self.client.log_artifacts(run_id, str(p), f"{artifact_path}/{p.name}" if artifact_path else p.name)
            else:
                self.client.log_artifact(run_id, str(p), artifact_path)

    # -- datasets (driftloop.tracking.datasets) ------------------------------
    def log_dataset(
        self,
        run_id: str,
        rows: list[dict[str, Any]],
        name: str,
        context: str,
        source: str | tuple[str, str],
        digest: str | None = None,
    ) -> str:
        """Log `rows` as an input dataset of the run (`context`: training, evaluation, monitoring).
        `source`: a path or URI, or (table, filter) of the feedback store. Returns the digest shown."""
        from driftloop.tracking.datasets import StoreSource, log_dataset

        src = StoreSource(*source) if isinstance(source, tuple) else source
        return log_dataset(self, run_id, rows, name, context, src, digest)

    def log_window(self, run_id: str, frame: Any, name: str, start: str, end: str, **kw: Any) -> str:
        """A monitored window as a `monitoring` input (`driftloop.tracking.datasets.log_window`)."""
        from driftloop.tracking.datasets import log_window

        return log_window(self, run_id, frame, name, start, end, **kw)

    def log_model_input(self, run_id: str, version: str) -> str | None:
        """Version `version`'s LoggedModel as an input of the run (`driftloop.tracking.models`)."""
        from driftloop.tracking.models import log_model_input

        return log_model_input(self, run_id, version)

    def log_training_set(self, run_id: str, examples: list[dict[str, Any]], manifest: dict, path: str) -> str:
        """The curated training set (the job's data file) as the run's `training` dataset."""
        rows = [{k: v for k, v in e.items() if k != "sources"} for e in examples]
        return self.log_dataset(run_id, rows, "training-set", "training", path, digest=manifest.get("digest"))

    def run_datasets(self, run_id: str) -> list:
        """The run's input datasets (`driftloop.tracking.datasets.DatasetRecord`), in logging order."""
        from driftloop.tracking.datasets import run_datasets

        return run_datasets(self, run_id)

    def log_decision(self, run_id: str, decision: Decision, stage: str) -> None:
        """Tags for the action and the first reasons; the whole decision as JSON."""
        self.set_tags(
            run_id,
            {
                T.decision_action(stage): decision.action.value,
                T.decision_reason(stage): " | ".join(decision.reasons)[:4900],
                T.POLICY_VERSION: decision.policy_version,
            },
        )
        self.log_dict(run_id, decision.model_dump(mode="json"), f"decision_{stage}.json")

    def cycle_history(self, max_cycles: int = 500) -> list[dict[str, Any]]:
        """The latest `max_cycles` recorded cycles, oldest first: run, tags, summary and monitor metrics.

        This is what the dashboards read; each entry has `run_id`, `start` (ms since
        the epoch), `tags`, `summary` (cycle_summary.json, or {}), `monitor_metrics`
        and `monitor_params` (empty where the cycle stopped before monitoring). The
        monitor runs come from one search, not one per cycle.
        """
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string="tags.`driftloop.kind` = 'cycle'",
            order_by=["attributes.start_time DESC"],
            max_results=max_cycles,
        )[::-1]
        monitors: dict[str, Any] = {}
        if runs:
            since = runs[0].info.start_time
            for c in self.client.search_runs(
                [self.experiment_id],
                max_results=50_000,
                order_by=["attributes.start_time ASC"],
                filter_string=f"tags.`driftloop.stage` = 'monitor' AND attributes.start_time >= {since}",
            ):
                monitors.setdefault(c.data.tags.get("mlflow.parentRunId", ""), c)
        out = []
        for r in runs:
            rid = r.info.run_id
            mon = monitors.get(rid)
            out.append(
                {
                    "run_id": rid,
                    "start": r.info.start_time,
                    "tags": dict(r.data.tags),
                    "summary": self._load_json(rid, "cycle_summary.json"),
                    "monitor_metrics": dict(mon.data.metrics) if mon else {},
                    "monitor_params": dict(mon.data.params) if mon else {},
                }
            )
        return out

    def _load_json(self, run_id: str, artifact: str) -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self._mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=artifact, dst_path=tmp, tracking_uri=self.uri
                )
            except Exception:  # noqa: BLE001 - a cycle that crashed early has no summary
                return {}
            return json.loads(Path(path).read_text(encoding="utf-8"))

    # -- registry ---------------------------------------------------------
    def register_model(
        self, run_id: str, model_dir: str | Path, description: str = "", tags: dict[str, str] | None = None
    ) -> str:
        """Log `model_dir` as an MLflow Model of the run (a LoggedModel: pyfunc text generator with
        signature and input example, `driftloop.tracking.models`) and register it; returns the new
        version. The files are stored once, under the LoggedModel; the version points at it."""
        from mlflow.exceptions import MlflowException

        from driftloop.tracking.models import log_text_model

        t = {T.STATUS: T.STATUS_CANDIDATE, **(tags or {})}
        logged = log_text_model(self, run_id, model_dir, self.prompt_template, tags=t)
        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            self.client.create_registered_model(self.model_name)
        # MLflow's SQL registry looks the LoggedModel up through the process-wide tracking URI
        # (a TODO in mlflow/store/model_registry/sqlalchemy_store.py), not this client's.
        self._mlflow.set_tracking_uri(self.uri)
        mv = self.client.create_model_version(
            self.model_name,
            source=logged.model_uri,
            run_id=run_id,
            description=description or None,
            tags=t,
            model_id=logged.model_id,
        )
        return str(mv.version)

    def alias_version(self, alias: str) -> str | None:
        """Version the alias points at, or None where it is not set."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException:
            return None

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.model_name, alias, str(version))

    def delete_alias(self, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model_alias(self.model_name, alias)
        except MlflowException:
            pass

    def move_champion(self, version: str, by: str, reason: str, how: str) -> str | None:
        """Point `champion` at `version` (one atomic alias update); returns the version it replaced.

        Each move is also an append-only MLflow run (`driftloop.kind=promotion`) saying who,
        why, how (gate, manual, rollback) and which version it replaced: the history.
        """
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_model_version(self.model_name, str(version))
        except MlflowException:
            raise InputError(f"version {version}: no such version of {self.model_name!r}") from None
        previous = self.alias_version("champion")
        self.set_alias("champion", str(version))
        tags = {
            T.KIND: "promotion",
            T.VERSION: str(version),
            T.BY: by,
            T.HOW: how,
            T.REASON: reason[:4900],
            T.PREVIOUS: previous or "",
        }
        run = self.start_run(f"{how}-v{version}", tags=tags)
        self.end_run(run)
        self.set_version_tags(str(version), {T.PROMOTED_BY: by, T.PROMOTION: how, T.STATUS: T.STATUS_PROMOTED})
        return previous

    def close_candidate(self, version: str, promoted: bool) -> None:
        """After the gate's decision on `version`: `challenger` is removed (it named the candidate
        under evaluation); a rejected version is tagged `driftloop.status=rejected` and keeps no alias."""
        if not promoted:
            self.set_version_tags(str(version), {T.STATUS: T.STATUS_REJECTED})
            for alias in self.version_info(str(version))["aliases"]:
                self.delete_alias(alias)
        if self.alias_version("challenger") == str(version):
            self.delete_alias("challenger")

    def champion_history(self, limit: int = 100) -> list[dict[str, str]]:
        """Every move of `champion` (gate, manual or rollback), newest first."""
        from datetime import datetime

        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string="tags.`driftloop.kind` = 'promotion'",
            order_by=["attributes.start_time DESC"],
            max_results=limit,
        )
        return [
            {
                "version": r.data.tags.get(T.VERSION, ""),
                "by": r.data.tags.get(T.BY, ""),
                "how": r.data.tags.get(T.HOW, ""),
                "reason": r.data.tags.get(T.REASON, ""),
                "previous": r.data.tags.get(T.PREVIOUS, ""),
                "run_id": r.info.run_id,
                "at": datetime.fromtimestamp(r.info.start_time / 1000, tz=UTC).isoformat(timespec="seconds"),
            }
            for r in runs
        ]

    def set_version_tags(self, version: str, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_model_version_tag(self.model_name, str(version), k, str(v)[:5000])

    def set_version_description(self, version: str, text: str) -> None:
        self.client.update_model_version(self.model_name, str(version), description=text[:5000])

    def version_info(self, version: str) -> dict[str, Any]:
        mv = self.client.get_model_version(self.model_name, str(version))
        return {
            "version": str(mv.version),
            "source": mv.source,
            "run_id": mv.run_id,
            "aliases": list(mv.aliases or []),
            "tags": dict(mv.tags or {}),
            "description": mv.description or "",
        }

    def resolve(self, ref: str) -> tuple[str, Path]:
        """`champion`/`challenger`/any alias, a version number, or a local path -> (label, local folder).

        Registry models are downloaded once into the cache folder and reused.
        """
        p = Path(ref).expanduser()
        if p.exists():
            return str(p), p
        version = ref if ref.isdigit() else self.alias_version(ref)
        if version is None:
            raise InputError(f"model {ref!r}: no such alias in registered model {self.model_name!r}, and no such path")
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(self.model_name, version)
        except MlflowException:
            raise InputError(f"model {ref!r}: version {version} of {self.model_name!r} does not exist") from None
        from driftloop.tracking.models import version_folder

        return version, version_folder(self, version, mv.source)

    # -- on-demand evaluations (driftloop.services.evaluation) ------------------------
    def set_run_status(self, run_id: str, status: str) -> None:
        """Set a run's MLflow status: SCHEDULED (queued), RUNNING, FINISHED, FAILED or KILLED."""
        self.client.update_run(run_id, status=status)

    def run_link(self, run_id: str) -> str:
        """Address of the run in the MLflow UI: absolute for a tracking server, else the UI path."""
        if self.uri.startswith(("http://", "https://")):
            return self.uri.rstrip("/") + "/" + self.run_url(run_id)
        return self.run_url(run_id)

    def run_record(self, run_id: str) -> dict[str, Any] | None:
        """A run's status, tags and metrics, or None where there is no such run."""
        from mlflow.exceptions import MlflowException

        try:
            r = self.client.get_run(run_id)
        except MlflowException:
            return None
        return {
            "run_id": r.info.run_id,
            "status": r.info.status,
            "tags": dict(r.data.tags),
            "metrics": dict(r.data.metrics),
            "start": r.info.start_time,
            "end": r.info.end_time,
        }

    def read_json(self, run_id: str, artifact: str) -> Any:
        """A JSON artifact of the run, or {} where it is missing."""
        return self._load_json(run_id, artifact)

    def version_exists(self, version: str) -> bool:
        """Whether `version` is a version of the registered model."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_model_version(self.model_name, str(version))
        except MlflowException:
            return False
        return True

    def run_with_tag(self, key: str, value: str) -> str | None:
        """Id of a run in the experiment whose tag `key` equals `value`, or None."""
        value = value.replace("'", "")
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{key}` = '{value}'", max_results=1)
        return runs[0].info.run_id if runs else None

    def record_gate(self, run_id: str, version: str, verdict: Decision) -> dict[str, str]:
        """The gate's figures on the cycle run and the version (`driftloop.tracking.gate.record_gate`)."""
        from driftloop.tracking.gate import record_gate

        return record_gate(self, run_id, version, verdict)


from driftloop.tracking.aliases import _read_aliases, alias_versions  # noqa: E402  (re-exported)

__all__ = ["Tracker", "alias_versions", "metric_key", "_read_aliases"]
