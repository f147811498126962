"""JSONL lines in blocks, split as the row path splits them, for the columnar fast path.

A block holds up to a batch of non-blank lines without their line ends; an
over-long line is None with its first bytes kept for the quarantine. Chunks
of a megabyte are split at C speed, line by line only where a chunk has a
blank line, a CR or a BOM at the start of the file.

    >>> for block in jsonl_blocks(stream, 0, 2000, MAX_LINE_BYTES, 64 * 1024):
    ...     block.lines[0][:1], block.end
    (b'{', 961234)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

READ_BYTES = 1 << 20  # bytes read from the stream at a time
_BOM = b"\xef\xbb\xbf"


class Block(NamedTuple):
    """Up to a batch of non-blank lines; None marks an over-long line whose start is in `samples`."""

    lines: list[bytes | None]
    samples: dict[int, bytes]
    end: int  # stream offset just after the last line
    numbers: list[int] | tuple[int, ...] = ()  # the 1-based line number in the file of each line


def jsonl_blocks(
    stream: BinaryIO, offset: int, batch_lines: int, max_line: int, keep: int, number: int = 0
) -> Iterator[Block]:
    """Blocks of `batch_lines` non-blank lines read from `offset`, as `files._lines` splits them.

    Lines lose their line end (and a UTF-8 BOM at the start of the file); a
    line over `max_line` bytes becomes None with its first `keep` bytes kept.
    `number` is the number of lines before `offset`: each line's number
    counts on from it, blank lines included. Read errors propagate; blocks
    already yielded are complete.
    """
    keep = min(keep, max_line + 1)  # the row path's sample comes from a read of max_line + 1 bytes
    lines: list[bytes | None] = []
    samples: dict[int, bytes] = {}
    numbers: list[int] = []
    pos = last = offset  # pos: stream offset where `pending` starts
    pending, skipping = b"", False
    while True:
        data = stream.read(READ_BYTES)
        eof = not data
        if skipping:  # inside an over-long line: drop its bytes up to its line end
            cut = data.find(b"\n")
            if cut < 0 and not eof:
                pos += len(data)
                continue
            if cut >= 0:
                pos += cut + 1
                data = data[cut + 1 :]
            last, skipping = pos, False
            if len(lines) >= batch_lines:
                yield Block(lines, samples, last, numbers)
                lines, samples, numbers = [], {}, []
            if eof:
                break
        buf = pending + data if pending else data
        if eof:  # what is left is the last line, without a line end
            parts, pending, tail = ([buf] if buf else []), b"", 0
        else:
            parts, tail = buf.split(b"\n"), 1
            pending = parts.pop()
        if tail and parts and _plain_lines(buf, parts, pos, max_line):
            # No complete line is blank, over-long or ends in CR: take them in slices.
            i = 0
            while i < len(parts):
                chunk = parts[i : i + batch_lines - len(lines)]
                i += len(chunk)
                lines.extend(chunk)
                numbers.extend(range(number + 1, number + 1 + len(chunk)))
                number += len(chunk)
                pos += sum(map(len, chunk)) + len(chunk)
                last = pos
                if len(lines) >= batch_lines:
                    yield Block(lines, samples, last, numbers)
                    lines, samples, numbers = [], {}, []
            parts = []
        for part in parts:
            start = pos
            pos += len(part) + tail
            number += 1
            if len(part) > max_line:
                samples[len(lines)] = part[:keep]
                numbers.append(number)
                lines.append(None)
            else:
                if start == 0 and part.startswith(_BOM):
                    part = part[3:]
                part = part.rstrip(b"\r")
                if not part.strip():
                    continue
                numbers.append(number)
                lines.append(part)
            last = pos
            if len(lines) >= batch_lines:
                yield Block(lines, samples, last, numbers)
                lines, samples, numbers = [], {}, []
        if eof:
            break
        if len(pending) > max_line:  # an over-long line: keep its start, skip the rest
            samples[len(lines)] = pending[:keep]
            number += 1
            numbers.append(number)
            lines.append(None)
            pos += len(pending)
            pending, skipping = b"", True
    if lines:
        yield Block(lines, samples, last, numbers)


def _plain_lines(buf: bytes, parts: list[bytes], pos: int, max_line: int) -> bool:
    """True when none of `parts` (the complete lines of `buf`) is blank, over-long or ends in CR.

    Each line's first byte is at least "{" (the smallest line decides): no
    whitespace, so no blank line; a UTF-8 BOM at the start of the file takes
    the line-by-line loop, which strips it.
    """
    return (
        min(parts)[:1] >= b"{"
        and b"\r" not in buf
        and max(map(len, parts)) <= max_line
        and not (pos == 0 and buf.startswith(_BOM))
    )


def count_lines(stream: BinaryIO, offset: int) -> int:
    """The number of line ends in the first `offset` bytes of `stream` (read from its start).

    A resumed file's line numbers go on from there; the stream is left at `offset`.
    """
    stream.seek(0)
    n, left = 0, offset
    while left > 0:
        data = stream.read(min(READ_BYTES, left))
        if not data:
            break
        n += data.count(b"\n")
        left -= len(data)
    stream.seek(offset)
    return n
