"""The feedback store: SQLAlchemy 2 tables, Alembic migrations and the `Store` repository.

    >>> from driftloop.store import Store
    >>> store = Store("sqlite:///.driftloop/store.db")
    >>> store.migrate()
    >>> store.count_events()
    0
"""

from driftloop.store.repo import Store

__all__ = ["Store"]
