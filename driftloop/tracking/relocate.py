"""A state folder that moves: MLflow's SQLite file keeps absolute artifact paths, so where the
folder was copied or moved, the paths under its old place are rewritten to its new one on open.

MLflow stores each artifact root as an absolute path (the experiment's root, each run's and
each LoggedModel's artifact location, each registry version's storage location, a dataset's
file source). driftloop's default layout puts both `mlflow.db` and `mlartifacts/` in the
state folder, so the old folder is where the recorded root sits relative to the database:
`<old>/mlartifacts` recorded, `<new>/mlartifacts` configured, `<new>/mlflow.db` opened.
Only a SQLite tracking store moves with its folder; any other store is left alone.

    >>> relocate("sqlite:////srv/copy/.driftloop/mlflow.db", "/srv/copy/.driftloop/mlartifacts",
    ...          recorded="/home/ana/.driftloop/mlartifacts")
    Relocation(old='/home/ana/.driftloop', new='/srv/copy/.driftloop', rows=42)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Every column of MLflow's SQL schema that holds a local artifact path (mlflow 3.17).
PATH_COLUMNS = [
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
]
# Columns holding JSON that may embed such a path (a dataset's file source: {"uri": "..."}).
JSON_COLUMNS = [("datasets", "dataset_source")]


@dataclass(frozen=True)
class Relocation:
    old: str
    new: str
    rows: int


def moved_from(uri: str, artifact_root: str | None, recorded: str) -> tuple[str, str] | None:
    """(old folder, new folder) where `recorded` is the configured `artifact_root` of a state
    folder that has moved; None where nothing moved or this cannot be a move (another store,
    a URI root, a root outside the database's folder, a recorded root of another shape)."""
    if not uri.startswith("sqlite:///") or not artifact_root or "://" in artifact_root or "://" in recorded:
        return None
    new_dir = Path(uri[len("sqlite:///") :]).resolve().parent
    root = Path(artifact_root).resolve()
    try:
        rel = root.relative_to(new_dir)
    except ValueError:
        return None  # the artifacts live outside the state folder: they did not move with it
    old_root = Path(recorded)
    if old_root == root or not old_root.is_absolute():
        return None
    parts = rel.parts
    if not parts or old_root.parts[-len(parts) :] != parts:
        return None  # the recorded root is not <folder>/<the same relative path>: a changed setting
    old_dir = Path(*old_root.parts[: -len(parts)])
    return str(old_dir), str(new_dir)


def relocate(uri: str, old: str, new: str) -> Relocation:
    """Rewrite every recorded path under `old` to the same path under `new`, in one transaction."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(uri)
    old_p, new_p = old.rstrip(os.sep) + os.sep, new.rstrip(os.sep) + os.sep
    rows = 0
    try:
        with engine.begin() as conn:
            have = set(inspect(conn).get_table_names())
            for table, col in PATH_COLUMNS:
                if table not in have:
                    continue
                for o, n in ((old_p, new_p), (f"file://{old_p}", f"file://{new_p}")):
                    rows += conn.execute(
                        text(f"UPDATE {table} SET {col} = :n || substr({col}, :k) WHERE substr({col}, 1, :m) = :o"),
                        {"n": n, "o": o, "k": len(o) + 1, "m": len(o)},
                    ).rowcount
            for table, col in JSON_COLUMNS:
                if table in have:
                    rows += conn.execute(
                        text(f"UPDATE {table} SET {col} = replace({col}, :o, :n) WHERE instr({col}, :o) > 0"),
                        {"o": old_p, "n": new_p},
                    ).rowcount
    finally:
        engine.dispose()
    return Relocation(old=old, new=new, rows=rows)
