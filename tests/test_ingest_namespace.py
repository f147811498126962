"""Editing a file source's glob keeps the ids of the events its files hold: a file read again is not
stored a second time under new ids."""

from __future__ import annotations

import json

import pytest

from driftloop.core.config import FileSource
from driftloop.core.errors import ConfigError
from driftloop.ingest import ingest_files

TS = "2026-11-01T10:00:00+00:00"


def write(path, rows):
    path.write_text("".join(json.dumps({"ts": TS, "prompt": p, "rating": 4}) + "\n" for p in rows))


def test_an_edited_glob_keeps_the_namespace_its_files_were_read_under(store, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    a = folder / "a.jsonl"
    write(a, ["one", "two", "three"])  # no event ids: content ids, which hash the namespace
    first = ingest_files(store, [(a, FileSource(path=f"{folder}/*.jsonl"))])
    assert (first.accepted, store.count_events()) == (3, 3)

    write(a, ["zero", "one", "two", "three"])  # the export rewritten: read again from its start
    edited = FileSource(path=f"{folder}/**/*.jsonl")  # and the glob edited
    again = ingest_files(store, [(a, edited)])
    assert (again.read, again.accepted, again.duplicates) == (4, 1, 3)
    assert store.count_events() == 4

    # An explicit namespace is the user's choice: used as given.
    pinned = ingest_files(store, [(a, FileSource(path=f"{folder}/*.jsonl", id_namespace="exports-v2"))])
    assert pinned.read == 0  # resumed at the file's checkpoint: nothing new to read


def test_files_read_under_two_namespaces_need_an_explicit_one(store, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write(a, ["one"])
    write(b, ["two"])
    ingest_files(store, [(a, FileSource(path=str(a)))])
    ingest_files(store, [(b, FileSource(path=str(b)))])
    merged = FileSource(path=f"{tmp_path}/*.jsonl")
    write(a, ["zero", "one"])
    with pytest.raises(ConfigError, match="read under different id namespaces"):
        ingest_files(store, [(a, merged), (b, merged)])
    assert store.count_events() == 2  # nothing stored
    report = ingest_files(store, [(a, FileSource(path=merged.path, id_namespace=f"files:{a}")), (b, merged)])
    assert report.accepted == 1 and store.count_events() == 3
