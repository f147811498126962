"""A registry version's lineage: the run that trained it, the datasets that run read, and the
feedback events (with the source each was ingested from) behind every training item.

The use case behind `driftloop lineage VERSION`; the events come from the training run's
`data_manifest.json` (`sources`: training item id -> event ids), their sources from the store.

    >>> lin = lineage(store, tracker, "2")
    >>> lin.items[0]
    ItemLineage(item='t3', events=[EventRef(event_id='e17', source='feedback/day1.jsonl')])
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from driftloop.core import tags as T
from driftloop.core.errors import InputError
from driftloop.store import Store
from driftloop.store.lineage_reads import event_sources
from driftloop.tracking import Tracker


class EventRef(BaseModel):
    event_id: str
    source: str = Field(description="Where the event was ingested from; empty where the store no longer holds it.")


class ItemLineage(BaseModel):
    item: str = Field(description="Training row id (a training-pool item, a replay row, or a preference row).")
    events: list[EventRef]


class DatasetRef(BaseModel):
    name: str
    context: str
    digest: str
    source_type: str
    source: str
    rows: int | None = None


class Lineage(BaseModel):
    version: str
    model_uri: str = Field(description="The MLflow Model the version points at.")
    origin: str = Field(description="base (registered as the first champion) or retrain.")
    status: str = ""
    base_version: str = ""
    run_id: str = Field(description="The run that produced the version (for a retrain: the training run).")
    objective: str = ""
    datasets: list[DatasetRef] = Field(default_factory=list)
    items: list[ItemLineage] = Field(default_factory=list)

    def event_ids(self) -> set[str]:
        return {e.event_id for i in self.items for e in i.events}


def lineage(store: Store, tracker: Tracker, ref: str) -> Lineage:
    """Lineage of version `ref` (a number or an alias); InputError where there is no such version."""
    version = ref if ref.isdigit() else tracker.alias_version(ref)
    if version is None or not tracker.version_exists(version):
        raise InputError(f"version {ref!r}: no such version or alias of {tracker.model_name!r}")
    info = tracker.version_info(version)
    tags = info["tags"]
    run_id = tags.get(T.RETRAIN_RUN) or info["run_id"] or ""
    manifest = tracker.read_json(run_id, "data_manifest.json") if run_id else {}
    sources: dict[str, list[str]] = manifest.get("sources") or {}
    where = event_sources(store, (e for ids in sources.values() for e in ids))
    return Lineage(
        version=version,
        model_uri=info["source"],
        origin=tags.get(T.ORIGIN, ""),
        status=tags.get(T.STATUS, ""),
        base_version=tags.get(T.BASE_VERSION, ""),
        run_id=run_id,
        objective=str(manifest.get("objective", "")),
        datasets=[DatasetRef(**vars(d)) for d in tracker.run_datasets(run_id)] if run_id else [],
        items=[
            ItemLineage(item=k, events=[EventRef(event_id=e, source=where.get(e, "")) for e in ids])
            for k, ids in sorted(sources.items())
        ],
    )
