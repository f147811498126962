"""Where a file source resumes: the checkpoint text of a byte offset into a feedback file,
and the checks that tell an appended file (resume there) from a replaced, rewritten or
truncated one (read again from the start; ids make that idempotent).

A checkpoint is `offset:hash-of-head[:hash-of-mark]`: the hash of the first bytes up to
the offset (at most HEAD_BYTES) tells a replaced file; the mark tells a file rewritten in
place whose head did not change (for a plain file the TAIL_BYTES just before the offset,
for a gzip file its size, mtime and inode).

    >>> checkpoint_text(5, b"hello world")
    '5:2cf24dba5fb0a30e'
    >>> offset_of("5:2cf24dba5fb0a30e", b"hello world"), offset_of("5:2cf24dba5fb0a30e", b"HELLO world")
    (5, 0)
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

HEAD_BYTES = 4096  # bytes hashed to tell a replaced file from an appended one
TAIL_BYTES = 4096  # bytes just before a checkpoint's offset, hashed to tell a rewritten file from an appended one


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_stream(path: Path, raw: BinaryIO) -> BinaryIO:
    return gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip(path) else raw  # type: ignore[return-value]


def head_bytes(path: Path, decompress: bool = True) -> bytes:
    with open(path, "rb") as raw:
        return (open_stream(path, raw) if decompress else raw).read(HEAD_BYTES)


def checkpoint_text(offset: int, head: bytes, mark: bytes | None = None) -> str:
    """Checkpoint text: the offset, a hash of the bytes before it (at most HEAD_BYTES), and of `mark`.

    `mark` tells an append from a rewrite that kept the head: for a plain
    file the TAIL_BYTES just before the offset (`tail_mark`), for a gzip file
    its size, mtime and inode (`stat_mark`). Checkpoints written without one
    (`offset:hash`) are still read.
    """
    text = f"{offset}:{hashlib.sha256(head[:offset]).hexdigest()[:16]}"
    return text if mark is None else f"{text}:{hashlib.sha256(mark).hexdigest()[:16]}"


def tail_mark(fd: int, offset: int) -> bytes:
    """The TAIL_BYTES of a plain file just before `offset` (one pread, wherever the stream is)."""
    return os.pread(fd, min(offset, TAIL_BYTES), max(0, offset - TAIL_BYTES))


def stat_mark(path: Path) -> bytes:
    """A gzip file's size, mtime and inode: any change reads it again from the start (ids make that idempotent)."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}".encode()


def same_mark(value: bytes, _offset: int) -> bytes:
    return value


def marked_position(head: bytes, mark: Callable[[int], bytes], offset: int) -> str:
    return checkpoint_text(offset, head, mark(offset))


def resume_offset(
    position: str | None,
    head: bytes,
    stream: BinaryIO,
    plain_size: int | None,
    mark: Callable[[int], bytes] | None = None,
) -> int:
    """Seek `stream` to the checkpoint; 0 when the file was replaced, rewritten or truncated since.

    `plain_size` is the file's size when it is not compressed (a plain file
    seeks past its end without complaint); a gzip stream stops at its end.
    `mark(offset)` is what `checkpoint_text` hashed as the mark when the checkpoint
    was written; a file rewritten in place with its first bytes unchanged
    differs there (the bytes before the offset, or the gzip file's stat).
    """
    offset = offset_of(position, head, mark)
    if offset <= 0 or (plain_size is not None and offset > plain_size):
        return 0
    stream.seek(offset)
    if stream.tell() != offset:
        stream.seek(0)
        return 0
    return offset


def offset_of(position: str | None, head: bytes, mark: Callable[[int], bytes] | None = None) -> int:
    try:
        offset = int((position or "0").split(":", 1)[0])
    except ValueError:
        return 0
    if offset <= 0:
        return 0
    if mark is not None and (position or "").count(":") == 2:
        try:
            return offset if checkpoint_text(offset, head, mark(offset)) == position else 0
        except OSError:
            return 0
    return offset if checkpoint_text(offset, head) == position else 0
