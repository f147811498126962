"""What each run read, as MLflow datasets (the run page's Datasets column): the training set,
the golden and canary sets, each monitored window. A dataset is a digest, a source and a
schema; the rows themselves stay where they are (the feedback store, a task file).

    >>> log_dataset(tracker, run_id, rows, name="golden", context="evaluation",
    ...             source=StoreSource(table="items", query="split=golden"))
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlflow.data.dataset_source import DatasetSource

if TYPE_CHECKING:
    from driftloop.tracking import Tracker

DIGEST_TAG = "driftloop.digest"  # the full digest driftloop itself recorded (MLflow keeps 36 chars)


class StoreSource(DatasetSource):
    """Rows of driftloop's feedback store: a table and the filter that selected them."""

    def __init__(self, table: str, query: str = ""):
        self.table, self.query = table, query

    @staticmethod
    def _get_source_type() -> str:
        return "driftloop_store"

    def load(self, **kwargs: Any):  # the store is read through driftloop, not through MLflow
        raise NotImplementedError("read the rows with driftloop (its store), not through MLflow")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> StoreSource:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "query": self.query}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> StoreSource:
        return cls(source_dict["table"], source_dict.get("query", ""))


@dataclass(frozen=True)
class DatasetRecord:
    """One dataset input of a run, as `driftloop lineage` prints it."""

    name: str
    context: str
    digest: str
    source_type: str
    source: str
    rows: int | None


def rows_digest(rows: list[dict[str, Any]]) -> str:
    """sha256 of the rows as canonical JSON (key order and row order as given)."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, sort_keys=True, default=str, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def log_dataset(
    tr: Tracker,
    run_id: str,
    rows: list[dict[str, Any]],
    name: str,
    context: str,
    source: str | DatasetSource,
    digest: str | None = None,
    columns: list[str] | None = None,
    frame: Any = None,
) -> str:
    """Log `rows` as the dataset `name` used by run `run_id` for `context` (training,
    evaluation, monitoring); returns the digest MLflow shows. Only `columns` go into the
    schema (all by default); the digest covers the whole rows. A DataFrame may come as `frame`
    instead of `rows`."""
    import pandas as pd
    from mlflow.data import from_pandas
    from mlflow.entities import DatasetInput, InputTag

    full = digest or rows_digest(rows)
    if frame is None:
        frame = pd.DataFrame(rows)
    if columns is not None:
        frame = frame.reindex(columns=columns)
    with warnings.catch_warnings():
        # A local path matches MLflow's two local-file source kinds (plain path, file://), which it
        # says in a warning before taking the same one either way.
        warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways")
        # Its hint that integer columns cannot hold missing values is about model signatures.
        warnings.filterwarnings("ignore", message=r"(?s).*Inferred schema contains integer column")
        # (The schema is inferred when the entity is made, so both happen under the filters.)
        ds = from_pandas(frame, source=source, name=name, digest=full[:32])
        entity = ds._to_mlflow_entity()
    tags = [InputTag("mlflow.data.context", context), InputTag(DIGEST_TAG, full)]
    tr.client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=tags)])
    return full[:32]


def log_window(
    tr: Tracker, run_id: str, frame: Any, name: str, start: str, end: str, note: str = "", digest: str | None = None
) -> str:
    """Log a monitored window (a frame of events from the store, or None where only its
    `digest` is known, e.g. a reference served from the profile cache) as a `monitoring` input.
    The digest of a frame is the sha256 of its event ids in order."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    source = StoreSource("feedback", f"ts >= {start} AND ts < {end}" + (f"; {note}" if note else ""))
    if frame is not None:
        full = digest or hashlib.sha256("\n".join(frame["event_id"].astype(str)).encode()).hexdigest()
        return log_dataset(tr, run_id, [], name, "monitoring", source, full, frame=frame)
    full = digest or ""
    ds = MetaDataset(source=source, name=name, digest=full[:32] or None)
    tags = [InputTag("mlflow.data.context", "monitoring"), InputTag(DIGEST_TAG, full)]
    tr.client.log_inputs(run_id, datasets=[DatasetInput(ds._to_mlflow_entity(), tags=tags)])
    return full[:32]


def run_datasets(tr: Tracker, run_id: str) -> list[DatasetRecord]:
    """The datasets logged as inputs of run `run_id`, in logging order."""
    run = tr.client.get_run(run_id)
    out = []
    for d in run.inputs.dataset_inputs if run.inputs else []:
        tags = {t.key: t.value for t in d.tags}
        profile = json.loads(d.dataset.profile or "{}")
        out.append(
            DatasetRecord(
                name=d.dataset.name,
                context=tags.get("mlflow.data.context", ""),
                digest=tags.get(DIGEST_TAG, d.dataset.digest),
                source_type=d.dataset.source_type,
                source=d.dataset.source,
                rows=profile.get("num_rows"),
            )
        )
    return out
