"""Alembic migrations of the feedback store; run them with `Store(url).migrate()`."""
