"""The leakage-safe golden set: corrected feedback split into held-out and training pools.

A prompt goes to the golden set iff the salted hash of its normalised text falls
below `holdout_fraction`, so the split is deterministic and needs no state. An
assignment already made (`existing_splits`) always wins, so a golden item never
moves to training when the fraction or the data change. Training items that are
near duplicates of any golden prompt (word-3-gram Jaccard >= `near_dup_jaccard`)
are dropped. `write_golden_task` turns the golden items into an lm-eval
multiple-choice task: the user's correction against distractors drawn from the
other corrections. Pure Python; no torch.

    >>> golden, train = split_corrections(rows, existing_splits={}, cfg=GoldenConfig())
    >>> task = write_golden_task(golden, Path(".driftloop/golden"), num_choices=4)
    >>> task.name, task.n
    ('driftloop_golden', 42)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import string
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from driftloop.core.config import GoldenConfig
from driftloop.core.errors import InputError

__all__ = [
    "GOLDEN",
    "TRAIN",
    "GoldenSplit",
    "GoldenTask",
    "TASK_NAME",
    "exclude_near_duplicates",
    "normalise_prompt",
    "prompt_key",
    "shingles",
    "split_corrections",
    "write_golden_task",
    "write_task_files",
]

log = logging.getLogger(__name__)

GOLDEN, TRAIN = "golden", "train"
TASK_NAME = "driftloop_golden"
_EDGE = string.punctuation + string.whitespace + "\u00bf\u00a1\u2026\u201c\u201d\u2018\u2019"
_WS = re.compile(r"\s+")


def normalise_prompt(text: str) -> str:
    """Lower-case, NFKC-normalised text with whitespace collapsed and punctuation stripped at both ends."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    return _WS.sub(" ", text).strip(_EDGE)


def prompt_key(text: str, salt: str) -> str:
    """sha256 hex digest of `salt` + the normalised prompt: the split key and dedupe key."""
    return hashlib.sha256((salt + normalise_prompt(text)).encode("utf-8")).hexdigest()


def shingles(text: str, k: int = 3) -> frozenset[tuple[str, ...]]:
    """Word k-gram set of the normalised prompt (words stripped of edge punctuation).

    A prompt shorter than k words is a single shingle of all its words, so short
    prompts still match their exact rewordings.
    """
    words = [w.strip(_EDGE) for w in normalise_prompt(text).split(" ")]
    words = [w for w in words if w]
    if len(words) < k:
        return frozenset([tuple(words)]) if words else frozenset()
    return frozenset(tuple(words[i : i + k]) for i in range(len(words) - k + 1))


def split_of(prompt: str, existing_splits: dict[str, str], cfg: GoldenConfig) -> str:
    """The split a prompt belongs to: the stored one where the prompt already has items, else its
    hash's (the same rule as `split_corrections`, so rated feedback and corrections on one prompt
    always land on the same side)."""
    key = prompt_key(prompt, cfg.salt)
    return existing_splits.get(key) or _hash_split(key, cfg.holdout_fraction)


def _hash_split(key: str, holdout_fraction: float) -> str:
    # First 32 bits of the key as a uniform number in [0, 1).
    return GOLDEN if int(key[:8], 16) / 2**32 < holdout_fraction else TRAIN


class _NearDupIndex:
    """Finds sets with Jaccard >= threshold to any golden set without comparing all pairs.

    Prefix filtering (Chaudhuri et al., 2006; Bayardo et al., 2007): order shingles
    rarest first; two sets with Jaccard >= t must share one of the first
    |x| - ceil(t*|x|) + 1 shingles of each. Only those prefixes are indexed and probed,
    and the few candidates found are checked exactly.
    """

    def __init__(self, sets: list[frozenset], threshold: float) -> None:
        self.t = threshold
        self.sets = [s for s in sets if s]
        self.df: Counter = Counter(sh for s in self.sets for sh in s)
        self.post: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for i, s in enumerate(self.sets):
            for sh in self._prefix(s):
                self.post[sh].append(i)

    def _prefix(self, s: frozenset) -> list[tuple[str, ...]]:
        # The epsilon errs towards a longer prefix (more candidates), never a missed match.
        keep = len(s) - math.ceil(self.t * len(s) - 1e-9) + 1
        return sorted(s, key=lambda sh: (self.df.get(sh, 0), sh))[:keep]

    def matches(self, s: frozenset) -> bool:
        """True when some indexed set has Jaccard >= threshold with `s`."""
        if not s:
            return False
        seen: set[int] = set()
        for sh in self._prefix(s):
            for i in self.post.get(sh, ()):
                if i in seen:
                    continue
                seen.add(i)
                g = self.sets[i]
                common = len(s & g)
                if common / (len(s) + len(g) - common) >= self.t:
                    return True
        return False


class GoldenSplit(tuple):
    """`(golden, train)` as returned by `split_corrections`, plus the counts behind it.

    Unpacks like a plain pair; `duplicates` counts rows dropped as exact repeats of an
    earlier prompt, `near_duplicates` the training items dropped for resembling a golden one.
    """

    golden: list[dict[str, Any]]
    train: list[dict[str, Any]]

    def __new__(cls, golden: list[dict], train: list[dict], duplicates: int = 0, near_duplicates: int = 0):
        self = super().__new__(cls, (golden, train))
        self.golden, self.train = golden, train
        self.duplicates, self.near_duplicates = duplicates, near_duplicates
        return self

    def __getnewargs__(self):  # so pickling (e.g. Prefect results) round-trips
        return (self.golden, self.train, self.duplicates, self.near_duplicates)


def split_corrections(
    corrected: list[dict[str, Any]],
    existing_splits: dict[str, str],
    cfg: GoldenConfig,
    golden_prompts: list[str] | None = None,
) -> GoldenSplit:
    """Split corrected feedback rows into (golden items, training items), leakage-safe.

    Rows carry `event_id, prompt, response, correction, segment`; rows without a
    correction are skipped. The first row of each normalised prompt is kept (exact
    duplicates dedupe). A prompt key found in `existing_splits` keeps its split;
    otherwise the key's hash decides (golden iff below `cfg.holdout_fraction`).
    Training items whose word-3-gram Jaccard with any golden prompt (this batch's and
    `golden_prompts`, the golden set so far) reaches `cfg.near_dup_jaccard` are
    dropped. Items are dicts: item_id, prompt_key, split, prompt, answer (the
    correction), response, segment, source_event_id.
    """
    seen: set[str] = set()
    golden: list[dict[str, Any]] = []
    candidates: list[dict[str, Any]] = []
    duplicates = 0
    for row in corrected:
        correction = (row.get("correction") or "").strip()
        prompt = row.get("prompt") or ""
        if not correction or not normalise_prompt(prompt):
            continue
        key = prompt_key(prompt, cfg.salt)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        split = existing_splits.get(key) or _hash_split(key, cfg.holdout_fraction)
        if split not in (GOLDEN, TRAIN):
            raise InputError(f"existing split of prompt key {key[:12]} is '{split}', expected golden or train")
        item = {
            "item_id": hashlib.sha256(f"{key}\x00{correction}".encode()).hexdigest()[:16],
            "prompt_key": key,
            "split": split,
            "prompt": prompt,
            "answer": correction,
            "response": row.get("response") or "",
            "segment": dict(row.get("segment") or {}),
            "source_event_id": str(row.get("event_id", "")),
        }
        (golden if split == GOLDEN else candidates).append(item)

    train = exclude_near_duplicates(
        candidates, list(golden_prompts or []) + [g["prompt"] for g in golden], cfg.near_dup_jaccard
    )
    near = len(candidates) - len(train)
    if near or duplicates:
        log.info(
            "golden split: %d golden, %d train, %d exact duplicates, %d near duplicates of golden dropped",
            len(golden),
            len(train),
            duplicates,
            near,
        )
    return GoldenSplit(golden, train, duplicates=duplicates, near_duplicates=near)


def exclude_near_duplicates(
    items: list[dict[str, Any]], golden_prompts: list[str], threshold: float
) -> list[dict[str, Any]]:
    """The items whose `prompt` has word-3-gram Jaccard below `threshold` with every golden prompt.

    `split_corrections` applies it to each batch; apply it again to the whole stored
    training pool before a fine-tune, since a prompt added to the golden set later can
    make an item that was already in the pool a near duplicate.
    """
    index = _NearDupIndex([shingles(p) for p in golden_prompts], threshold)
    return [it for it in items if not index.matches(shingles(it["prompt"]))]


@dataclass(frozen=True)
class GoldenTask:
    """A written golden task: its lm-eval name, files, content hash and item count."""

    name: str
    yaml_path: Path
    data_path: Path
    task_hash: str
    n: int


def _choices(item: dict[str, Any], pool: list[str], num_choices: int, seed: int) -> tuple[list[str], int] | None:
    """The correction plus distractors, shuffled; None when fewer than two distinct choices exist."""
    answer = item["answer"]
    # String seed: random.Random hashes it with sha512, the same on every run and platform.
    rng = random.Random(f"{seed}:{item['item_id']}")
    others = [a for a in pool if a != answer]
    picked = rng.sample(others, min(num_choices - 1, len(others)))
    response = (item.get("response") or "").strip()
    if len(picked) < num_choices - 1 and response and response != answer and response not in picked:
        picked.append(response)  # the model's own wrong answer is a natural distractor
    if not picked:
        return None
    choices = picked + [answer]
    rng.shuffle(choices)
    return choices, choices.index(answer)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # readers see the old file or the new one, never half of one


class _Dumper(yaml.SafeDumper):
    """Writes strings that hold a newline double-quoted, as a person would (`"Q: {{prompt}}\\nA:"`)."""


_Dumper.add_representer(
    str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style='"' if "\n" in v else None)
)


def write_golden_task(items: list[dict[str, Any]], out_dir: Path, num_choices: int, seed: int = 0) -> GoldenTask:
    """Write the golden items as the lm-eval multiple-choice task `driftloop_golden` in `out_dir`.

    Each item's choices are its correction plus `num_choices - 1` distractors drawn
    deterministically (seeded by item_id) from the other distinct corrections in the
    set, topped up with the item's own wrong response when too few exist; an item
    that still has no distractor is left out. Items are written in item_id order, so
    the same items give the same bytes. The YAML names the JSONL by absolute path
    and carries `metadata.task_hash`, the sha256 of its own body and the data.
    """
    if num_choices < 2:
        raise InputError(f"num_choices must be at least 2, got {num_choices}")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_path = out / f"{TASK_NAME}.jsonl"
    yaml_path = out / f"{TASK_NAME}.yaml"

    ordered = sorted({it["item_id"]: it for it in items}.values(), key=lambda it: it["item_id"])
    pool = sorted({it["answer"] for it in ordered})
    lines, skipped = [], 0
    for it in ordered:
        picked = _choices(it, pool, num_choices, seed)
        if picked is None:
            skipped += 1
            continue
        choices, label = picked
        lines.append(
            json.dumps(
                {"id": it["item_id"], "prompt": it["prompt"], "choices": choices, "label": label},
                sort_keys=True,
                ensure_ascii=False,
            )
        )
    if not lines:
        raise InputError(f"golden set has no usable item ({len(ordered)} items, none with a distinct wrong answer)")
    if skipped:
        log.warning("golden task: %d of %d items left out (no distinct distractor)", skipped, len(ordered))
    data = "\n".join(lines) + "\n"

    body: dict[str, Any] = {
        "task": TASK_NAME,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_path)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "Q: {{prompt}}\nA:",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "target_delimiter": " ",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    return write_task_files(
        TASK_NAME, body, data_path, yaml_path, data, len(lines), "evaluators.golden.write_golden_task"
    )


def write_task_files(
    name: str, body: dict[str, Any], data_path: Path, yaml_path: Path, data: str, n: int, writer: str
) -> GoldenTask:
    """Write a generated lm-eval task: its JSONL `data` and its YAML `body`, with
    `metadata.task_hash` the sha256 of the body and the data. The hash covers content, not
    location: the data path enters by file name only, so the same items written to another
    state folder keep their hash. `writer` names the generating function in the YAML's header."""
    hashed = {**body, "dataset_kwargs": {"data_files": {"test": data_path.name}}}
    thash = hashlib.sha256()
    thash.update(yaml.safe_dump(hashed, sort_keys=True).encode("utf-8"))
    thash.update(data.encode("utf-8"))
    digest = thash.hexdigest()
    body["metadata"] = {"version": digest[:12], "task_hash": digest, "n": n}
    _write_atomic(data_path, data)
    _write_atomic(
        yaml_path,
        f"# Generated by {writer}; do not edit.\n"
        + yaml.dump(body, Dumper=_Dumper, sort_keys=False, allow_unicode=True),
    )
    return GoldenTask(name=name, yaml_path=yaml_path, data_path=data_path, task_hash=digest, n=n)
