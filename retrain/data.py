"""The training data file: JSONL rows of three kinds, read, checked and tokenised.

One file may hold any mix of:

- a correction (SFT): {"id", "prompt", "completion"};
- a preference pair (DPO): {"id", "prompt", "chosen", "rejected"};
- a rated completion (KTO): {"id", "prompt", "completion", "label": true | false}
  (true: thumbs up, desirable; false: thumbs down, undesirable).

Ids are unique across the file; other keys (e.g. source event ids) are ignored.
Which rows train depends on the objective (retrain/objectives.py). A bad row is
a DataError naming its line, so the job fails with one line and exit 2.
Standard library only, like the spec: curation imports it to hash what it wrote.

    >>> rows = load_examples("train.jsonl")
    >>> [row_kind(r) for r in rows]
    ['sft', 'pair', 'kto']
    >>> spec.data_digest = rows_digest(rows)  # the job refuses rows that differ
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = ("sft", "pair", "kto")


class DataError(ValueError):
    """The training data file is unusable (bad row, duplicate id, nothing left to train on)."""


@dataclass
class Encoded:
    """One tokenised sequence: ids of prompt + completion + eos, labels -100 on the prompt."""

    example: dict[str, Any]
    input_ids: list[int]
    labels: list[int]


def row_kind(row: dict[str, Any]) -> str:
    """ "pair" for a row with chosen/rejected, "kto" for a row with a label, else "sft"."""
    if "chosen" in row or "rejected" in row:
        return "pair"
    return "kto" if "label" in row else "sft"


def load_examples(path: str | Path) -> list[dict[str, Any]]:
    """Read the JSONL rows (module docstring), in file order, each reduced to its kind's fields.
    A malformed row, a duplicate id, or a pair whose chosen and rejected are the same text
    (nothing to prefer; curation quarantines these, the trainer still refuses them) raises
    DataError naming its line."""
    rows, seen = [], set()
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON: {e}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected string fields id, prompt, completion")
            kind = row_kind(row)
            if kind == "pair":
                fields = ("id", "prompt", "chosen", "rejected")
                if not all(isinstance(row.get(k), str) for k in fields):
                    raise DataError(f"{path}:{n}: a pair needs string fields id, prompt, chosen, rejected")
                if row["chosen"] == row["rejected"]:
                    raise DataError(f"{path}:{n}: pair {row['id']!r} has identical chosen and rejected")
            elif kind == "kto":
                fields = ("id", "prompt", "completion", "label")
                if not all(isinstance(row.get(k), str) for k in fields[:3]) or not isinstance(row["label"], bool):
                    raise DataError(
                        f"{path}:{n}: a rated row needs string fields id, prompt, completion and a true/false label"
                    )
            else:
                fields = ("id", "prompt", "completion")
                if not all(isinstance(row.get(k), str) for k in fields):
                    raise DataError(f"{path}:{n}: expected string fields id, prompt, completion")
            if row["id"] in seen:
                raise DataError(f"{path}:{n}: duplicate id {row['id']!r}")
            seen.add(row["id"])
            rows.append({k: row[k] for k in fields})
    if not rows:
        raise DataError(f"{path}: no training examples")
    return rows


def encode_example(tokenizer, example: dict[str, Any], template: str, completion: str | None = None) -> Encoded:
    """Tokenise one example as the evaluator scores it: the prompt text, then " " + completion,
    then eos. Like lm-eval, the whole text is encoded once and split at the prompt's length, so
    training and scoring see the same tokens. `completion` replaces the row's own (a pair's
    chosen or rejected text)."""
    context = template.replace("{prompt}", example["prompt"])
    text = example["completion"] if completion is None else completion
    whole = tokenizer(context + " " + text)["input_ids"]
    ctx = tokenizer(context)["input_ids"]
    if whole[: len(ctx)] != ctx:  # a token straddles the boundary: encode the parts apart
        whole = ctx + tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    ids = whole + ([eos] if eos is not None and whole[-1] != eos else [])
    labels = [-100] * len(ctx) + ids[len(ctx) :]
    return Encoded(example, ids, labels)


def row_hash(row: dict[str, Any]) -> str:
    """sha256 hex of one row's fields (unit-separated, so ("ab", "c") and ("a", "bc") differ).
    A correction hashes as retrain.spec.example_hash does (id, prompt, completion); a pair and
    a rated row are tagged with their kind, so no two kinds share a hash."""
    kind = row_kind(row)
    if kind == "pair":
        parts = ["pair", row["id"], row["prompt"], row["chosen"], row["rejected"]]
    elif kind == "kto":
        parts = ["kto", row["id"], row["prompt"], row["completion"], "true" if row["label"] else "false"]
    else:
        parts = [row["id"], row["prompt"], row["completion"]]
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()


def rows_digest(rows: list[dict[str, Any]]) -> str:
    """One sha256 over the sorted row hashes: names a training set independent of row order. For
    corrections only, it equals retrain.spec.dataset_digest."""
    return hashlib.sha256("\n".join(sorted(row_hash(r) for r in rows)).encode()).hexdigest()
