"""Which registry version each alias points at, read cheaply for `driftloop status`.

>>> alias_versions(cfg, ["champion", "challenger"])
{'champion': '3', 'challenger': None}
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def alias_versions(cfg, aliases: Iterable[str]) -> dict[str, str | None]:
    """The registry version each alias points at (None where it is not set), for `driftloop status`.

    Read straight from a local SQL tracking store's alias table where there is one (`_read_aliases`):
    loading MLflow to ask it takes seconds, the query milliseconds. Anything else asks MLflow.
    """
    names = list(aliases)
    found = _read_aliases(cfg.tracking_uri, cfg.tracking.registered_model, names)
    if found is not None:
        return found
    from driftloop.tracking import Tracker

    tr = Tracker.from_config(cfg)
    return {a: tr.alias_version(a) for a in names}


def _read_aliases(uri: str, model_name: str, aliases: list[str]) -> dict[str, str | None] | None:
    """Aliases of `model_name` from MLflow's `registered_model_aliases` table, read-only; None
    where this cannot answer for certain (not a SQL store, a named MLflow workspace, a table
    not of the expected shape, one alias in several workspaces): the caller then asks MLflow.
    A SQLite store that does not exist yet holds no aliases."""
    if os.environ.get("MLFLOW_WORKSPACE", "").strip() or not uri.startswith(("sqlite:", "postgresql", "mysql")):
        return None
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        return dict.fromkeys(aliases)
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        engine = create_engine(uri)
    except (SQLAlchemyError, ImportError):  # a URI or a database driver SQLAlchemy cannot use here
        return None
    try:
        with engine.connect() as conn:
            rows = (
                conn.execute(text("SELECT * FROM registered_model_aliases WHERE name = :name"), {"name": model_name})
                .mappings()
                .all()
            )
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()
    rows = [r for r in rows if r.get("workspace", "default") == "default"]
    if any(not {"alias", "version"} <= set(r) for r in rows) or len({r["alias"] for r in rows}) != len(rows):
        return None
    got = {r["alias"]: str(r["version"]) for r in rows}
    return {a: got.get(a) for a in aliases}
