"""The held-out preference suite: golden-side (chosen, rejected) pairs as a 2-choice lm-eval task.

A pair is two replies to one prompt that users rated differently (the better-rated one chosen),
or a correction over the reply it corrected. Only pairs whose prompt lies on the golden side of
the split (`evaluators.golden.split_of`, the same salted hash as the corrections) come here, so
no pair item ever trains. `write_preference_task` writes them as the lm-eval multiple-choice task
`driftloop_preference`: the prompt, and the two replies as choices. Its `acc_norm` is the win
rate of the chosen reply: the share of pairs on which the model gives the chosen reply the higher
log-likelihood per character (`acc`, the summed log-likelihood, is reported too). Items are
paired by id across models, so the gate's paired test applies. `reward_margin` turns the logged
per-choice log-likelihoods into the mean log-probability difference chosen - rejected, with its
interval. Pure Python; no torch.

    >>> task = write_preference_task(pairs, Path(".driftloop/tasks/preference"))
    >>> task.name, task.n
    ('driftloop_preference', 52)
    >>> reward_margin(samples).value  # nats, chosen - rejected
    1.84
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any

from driftloop.core.errors import InputError
from driftloop.core.types import MetricResult, SampleResults
from evaluators.golden import GoldenTask, write_task_files

__all__ = ["PREFERENCE_TASK", "pair_id", "reward_margin", "write_preference_task"]

PREFERENCE_TASK = "driftloop_preference"


def pair_id(prompt_key: str, chosen: str, rejected: str) -> str:
    """The stable id of a pair: its prompt key and both replies, hashed (16 hex digits)."""
    return hashlib.sha256(f"{prompt_key}\x00{chosen}\x00{rejected}".encode()).hexdigest()[:16]


def write_preference_task(pairs: list[dict[str, Any]], out_dir: Path, seed: int = 0) -> GoldenTask:
    """Write pairs {item_id, prompt, chosen, rejected} as the lm-eval task `driftloop_preference`.

    The chosen reply's position among the two choices is drawn per item (seeded by item_id),
    so a position effect cannot pass for a preference. Items are written in item_id order and
    the YAML carries `metadata.task_hash` (its body and the data), as the golden task does. A
    pair with identical replies is an InputError (curation quarantines those before).
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_path, yaml_path = out / f"{PREFERENCE_TASK}.jsonl", out / f"{PREFERENCE_TASK}.yaml"
    ordered = sorted({p["item_id"]: p for p in pairs}.values(), key=lambda p: p["item_id"])
    if not ordered:
        raise InputError("preference task: no pair to write")
    lines = []
    for p in ordered:
        chosen, rejected = str(p["chosen"]).strip(), str(p["rejected"]).strip()
        if chosen == rejected:
            raise InputError(f"preference pair {p['item_id']}: chosen and rejected are the same text")
        first = random.Random(f"{seed}:{p['item_id']}").random() < 0.5
        choices = [chosen, rejected] if first else [rejected, chosen]
        lines.append(
            json.dumps(
                {"id": p["item_id"], "prompt": p["prompt"], "choices": choices, "label": 0 if first else 1},
                sort_keys=True,
                ensure_ascii=False,
            )
        )
    data = "\n".join(lines) + "\n"
    body: dict[str, Any] = {
        "task": PREFERENCE_TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_path)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "Q: {{prompt}}\nA:",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "target_delimiter": " ",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }
    return write_task_files(
        PREFERENCE_TASK,
        body,
        data_path,
        yaml_path,
        data,
        len(lines),
        "evaluators.preference_task.write_preference_task",
    )


def reward_margin(samples: SampleResults, confidence: float = 0.95) -> MetricResult | None:
    """The mean summed log-probability difference chosen - rejected (nats) over the task's items,
    with a t interval; None where no item logged both log-likelihoods.

    Informative: the gate decides on the win rate. A positive margin means the model puts more
    probability on the chosen reply, as a DPO-trained policy's implicit reward does.
    """
    diffs = []
    for d in samples.detail.values():
        lls, label = d.get("loglikelihoods") or [], d.get("label")
        if len(lls) == 2 and label in (0, 1):
            diffs.append(lls[label] - lls[1 - label])
    n = len(diffs)
    if not n:
        return None
    mean = sum(diffs) / n
    lo = hi = None
    note = "no interval from one item"
    if n > 1:
        sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (n - 1))
        from scipy.stats import t as student_t

        half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
        lo, hi = mean - half, mean + half
        note = f"{confidence:.0%} CI: t interval; nats, chosen - rejected"
    return MetricResult(
        name=f"{samples.task}/reward_margin",
        value=mean,
        ci_low=lo,
        ci_high=hi,
        n=n,
        source="benchmark",
        direction="higher",
        note=note,
    )
