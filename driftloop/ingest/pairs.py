"""Preference-pair files as feedback: each pair row becomes two rated events on one prompt.

A file mapping turns one row into one event; a pair row ({"chosen": ..., "rejected": ...}, each a
whole conversation as in Anthropic's HH-RLHF: "\\n\\nHuman: ...\\n\\nAssistant: ...") holds two. The
conversation before the last assistant turn is the prompt, shared by both; the last assistant
reply is the response: the chosen one with a thumbs up, the rejected one with a thumbs down. The
events are ordinary feedback (JSONL), so any file source ingests them and curation makes them a
preference pair again (`retrain.curate.build_preference_set`), or a golden-side pair of the
preference suite when the prompt's hash says so.

    $ driftloop convert-pairs harmless-base-test.jsonl.gz feedback/hh.jsonl --limit 200
    >>> stats = convert_pairs(Path("pairs.jsonl.gz"), Path("feedback/hh.jsonl"))  # limit: pairs read
    >>> stats.pairs, stats.events, stats.skipped
    (1156, 2312, 0)
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from driftloop.core.errors import InputError

__all__ = ["ASSISTANT", "PairStats", "convert_pairs", "split_conversation"]

ASSISTANT = "\n\nAssistant:"


@dataclass
class PairStats:
    """What a conversion did: pair rows read, events written, rows skipped and why."""

    pairs: int = 0
    events: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def split_conversation(text: str) -> tuple[str, str] | None:
    """(the conversation up to and including the last "Assistant:" marker, the reply after it);
    None where the text has no assistant turn. The prompt keeps the speaker labels, trimmed."""
    at = text.rfind(ASSISTANT)
    if at < 0:
        return None
    return text[: at + len(ASSISTANT)].strip(), text[at + len(ASSISTANT) :].strip()


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def convert_pairs(
    src: Path,
    dest: Path,
    chosen: str = "chosen",
    rejected: str = "rejected",
    limit: int | None = None,
    start: datetime | None = None,
    source: str = "",
    max_chars: int | None = None,
) -> PairStats:
    """Write two feedback events per pair row of `src` (JSONL, optionally gzipped) to `dest`.

    Events: ts (`start`, default a day ago, plus one second per row, so the file keeps its order), prompt, response,
    thumbs_up, and segment {"source": `source` or the file's name}. A row whose two conversations
    differ before their last reply, that lacks an assistant turn, or whose prompt plus its longer
    reply exceeds `max_chars` (a small model's context) is skipped and counted; a row
    that is not a JSON object with both keys as strings is an InputError naming its line. The
    output is written to a temporary file and renamed: nothing half-written.
    """
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise InputError(f"convert-pairs: no such file: {src}")
    if limit is not None and limit < 1:
        raise InputError(f"convert-pairs: --limit must be at least 1, got {limit}")
    if max_chars is not None and max_chars < 1:
        raise InputError(f"convert-pairs: --max-chars must be at least 1, got {max_chars}")
    start = start or datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)  # one pair a second, all past
    tag = source or src.name.split(".")[0]
    stats = PairStats()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        with _open(src) as fh, tmp.open("w", encoding="utf-8") as out:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if limit is not None and stats.pairs >= limit:
                    break
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{src}:{n}: not JSON ({e.msg})") from None
                if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in (chosen, rejected)):
                    raise InputError(f"{src}:{n}: expected an object with string fields {chosen!r} and {rejected!r}")
                stats.pairs += 1
                good, bad = split_conversation(row[chosen]), split_conversation(row[rejected])
                if good is None or bad is None:
                    stats.skip("no assistant turn")
                    continue
                if good[0] != bad[0]:
                    stats.skip("conversations differ before the last reply")
                    continue
                if max_chars is not None and len(good[0]) + max(len(good[1]), len(bad[1])) > max_chars:
                    stats.skip("longer than --max-chars")
                    continue
                ts = (start + timedelta(seconds=stats.pairs)).isoformat()
                for reply, up in ((good[1], True), (bad[1], False)):
                    event: dict[str, Any] = {
                        "ts": ts,
                        "prompt": good[0],
                        "response": reply,
                        "thumbs_up": up,
                        "segment": {"source": tag},
                    }
                    out.write(json.dumps(event, ensure_ascii=False) + "\n")
                    stats.events += 1
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return stats
