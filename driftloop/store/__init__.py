"""The feedback store: SQLAlchemy 2 tables, Alembic migrations and the `Store` repository.

>>> from driftloop.store import Store
>>> store = Store("sqlite:///.driftloop/store.db")
>>> store.migrate()
>>> store.count_events()
0
>>> store.write_batch(Batch("feedback.jsonl", events, quarantine, Checkpoint("file:/x", "2048")))
Written(accepted=1200, duplicates=0)
"""

from driftloop.store.batch import Batch, Checkpoint, EventColumns, EventTable, QuarantineRow, Written
from driftloop.store.repo import Store

__all__ = ["Batch", "Checkpoint", "EventColumns", "EventTable", "QuarantineRow", "Store", "Written"]
