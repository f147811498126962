"""Id namespaces of file sources that stay put when a source's glob is edited.

A file source's default id namespace is `files:<glob>`, and the id of an
event without an `event_id` hashes it (as does the key of an explicit one):
edit the glob (`exports/*.jsonl` -> `exports/**/*.jsonl`) and every file read
again (a rewritten export, a copy) would store its events a second time
under new ids. So each file records the namespace it was read under (an
`ingest_checkpoint` row `namespace:file:<path>`), and a source without an
explicit `id_namespace` keeps the namespace its files were read under. A
source whose files were read under several namespaces (two sources merged
into one glob) must name one: ConfigError, before anything is stored.

    >>> ns = stable_namespaces(store, pairs)   # {id(source): namespace}
    >>> record_namespace(store, path, ns[id(src)])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from driftloop.core.errors import ConfigError
from driftloop.store import Store
from driftloop.store.batch import Batch, Checkpoint

_LOG = logging.getLogger("driftloop.ingest")


def marker(path: Path) -> str:
    """Checkpoint key of the namespace a file was read under."""
    return f"namespace:file:{path.resolve()}"


def stable_namespaces(store: Store, pairs: Sequence[tuple[Path, Any]]) -> dict[int, str]:
    """The id namespace of each source (by `id(source)`) of (path, FileSource) pairs.

    An explicit `id_namespace` is used as given. Otherwise: the namespace its
    files were read under before, where they agree (a warning says so when
    that is not the glob's own, `files:<glob>`), else the glob's own.
    Raises ConfigError naming the source when its files were read under
    different namespaces.
    """
    by_source: dict[int, tuple[Any, list[Path]]] = {}
    for p, src in pairs:
        by_source.setdefault(id(src), (src, []))[1].append(p)
    out: dict[int, str] = {}
    for key, (src, paths) in by_source.items():
        own = src.namespace()
        if src.id_namespace is not None:
            out[key] = own
            continue
        seen = {ns for p in paths if (ns := store.get_checkpoint(marker(p))) is not None}
        if len(seen) > 1:
            raise ConfigError(
                f"sources: {src.path}: its files were read under different id namespaces "
                f"({', '.join(sorted(map(repr, seen)))}); set id_namespace on the source to one of them; nothing was stored"
            )
        inherited = next(iter(seen), own)
        if inherited != own:
            _LOG.warning(
                "sources: %s: keeps the id namespace %r its files were read under (the glob changed); "
                "set id_namespace: %r to make it explicit",
                src.path,
                inherited,
                inherited,
            )
        out[key] = inherited
    return out


def record_namespace(store: Store, path: Path, namespace: str) -> None:
    """Record the namespace `path` is read under, where it has none yet (before its first batch)."""
    if store.get_checkpoint(marker(path)) is None:
        store.write_batch(Batch("", (), (), Checkpoint(marker(path), namespace)))
