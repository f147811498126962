"""Curate a fine-tuning set on the orchestrator: the training pool's corrected
items, deduplicated and length-filtered, mixed with replay of earlier training
data (a guard against catastrophic forgetting). The output is the JSONL that a
`RetrainSpec.data_path` names, and a manifest for the audit trail.

    >>> items = [{"item_id": "f1", "prompt": "i was charged twice", "answer": "a hold that disappears."}]
    >>> replay = load_replay("models/demo")            # [] when the model has no replay.jsonl
    >>> examples, manifest = build_training_set(items, replay, replay_fraction=0.5, seed=0)
    >>> write_jsonl(examples, "runs/r1.train.jsonl")
    >>> manifest["counts"]["train"]
    1
    >>> carry_replay(new_model_dir, replay, examples, seed=0)  # the next fine-tune's replay pool

Only the training pool may come in here: golden (held-out) items never do.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

from retrain.params import kto_weights
from retrain.spec import dataset_digest, example_hash


def normalise_prompt(text: str) -> str:
    """Case-folded, whitespace-collapsed text: the key under which two prompts are the same."""
    return " ".join(text.casefold().split())


def build_training_set(
    train_items: list[dict[str, Any]],
    replay: list[dict[str, Any]],
    replay_fraction: float,
    seed: int,
    max_chars: int = 2000,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Turn training-pool items ({item_id, prompt, answer}) and replay rows ({id, prompt,
    completion}) into examples [{id, prompt, completion}] and a manifest. Items are deduplicated
    by (normalised prompt, answer), the first by item_id kept; items with an empty side or longer
    than `max_chars` (prompt + answer, characters) are dropped. Replay rows not already present
    are sampled deterministically (by `seed`) so that they make `replay_fraction` of the result,
    or as close as the replay pool allows."""
    if not 0.0 <= replay_fraction <= 1.0:
        raise ValueError(f"replay_fraction: must be in [0, 1], got {replay_fraction}")
    seen: set[tuple[str, str]] = set()
    dup = too_long = 0
    examples = []
    for item in sorted(train_items, key=lambda it: str(it["item_id"])):
        prompt, answer = str(item["prompt"]).strip(), str(item["answer"]).strip()
        if not prompt or not answer or len(prompt) + len(answer) > max_chars:
            too_long += 1
            continue
        key = (normalise_prompt(prompt), answer)
        if key in seen:
            dup += 1
            continue
        seen.add(key)
        examples.append({"id": str(item["item_id"]), "prompt": prompt, "completion": answer})

    ids = {e["id"] for e in examples}
    pool = []
    for row in sorted(replay, key=lambda r: str(r["id"])):
        key = (normalise_prompt(row["prompt"]), row["completion"].strip())
        if key in seen or str(row["id"]) in ids or len(row["prompt"]) + len(row["completion"]) > max_chars:
            continue  # replay never duplicates a new item, nor itself
        seen.add(key)
        pool.append({"id": str(row["id"]), "prompt": row["prompt"], "completion": row["completion"]})
    if replay_fraction >= 1.0:
        want = len(pool)
    else:
        # r / (n + r) = f  =>  r = f * n / (1 - f)
        want = round(replay_fraction * len(examples) / (1.0 - replay_fraction))
    replayed = random.Random(seed).sample(pool, min(want, len(pool)))

    n_train = len(examples)
    examples += replayed
    manifest = {
        "counts": {"train": n_train, "replay": len(replayed), "dropped_duplicates": dup, "dropped_length": too_long},
        "replay_fraction": round(len(replayed) / len(examples), 4) if examples else 0.0,
        "requested_replay_fraction": replay_fraction,
        "seed": seed,
        "max_chars": max_chars,
        "digest": dataset_digest(examples),  # goes into RetrainSpec.data_digest
        "hashes": sorted(example_hash(e) for e in examples),
    }
    return examples, manifest


def write_jsonl(examples: list[dict[str, Any]], path: str | Path) -> Path:
    """Write examples one JSON object per line, atomically (a temp file renamed into place)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        for e in examples:
            fh.write(json.dumps(e, ensure_ascii=False) + "\n")
    os.replace(tmp, p)
    return p


def carry_replay(
    model_dir: str | Path, old: list[dict[str, Any]], new: list[dict[str, Any]], seed: int, keep: int = 2000
) -> int:
    """Write a new model folder's `replay.jsonl`: the base's replay rows plus the examples it was
    just trained on (by id, the newer row winning), sampled down to `keep` rows by `seed` so the
    pool stays bounded across retrains. Returns the number of rows written."""
    rows = {str(r["id"]): r for r in old + new}
    ids = sorted(rows)
    if len(ids) > keep:
        ids = sorted(random.Random(seed).sample(ids, keep))
    write_jsonl([rows[i] for i in ids], Path(model_dir) / "replay.jsonl")
    return len(ids)


def load_replay(model_dir: str | Path) -> list[dict[str, Any]]:
    """The replay rows ({id, prompt, completion}) stored in a model folder's `replay.jsonl`;
    an empty list when the folder has none."""
    p = Path(model_dir) / "replay.jsonl"
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- preference data: every kind of feedback becomes a training item -----------------------------


def feedback_label(event: dict[str, Any]) -> float | None:
    """A rated event's score in [0, 1]: its thumbs (1 or 0) where it has them, else its normalised
    rating; None where the user said nothing."""
    if event.get("thumbs_up") is not None:
        return 1.0 if event["thumbs_up"] else 0.0
    rating = event.get("rating")
    return None if rating is None else float(rating)


def build_preference_set(
    rated: list[dict[str, Any]],
    corrected: list[dict[str, Any]],
    neutral: tuple[float, float] = (0.5, 0.5),
    max_chars: int = 2000,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Turn the training pool's feedback into training rows for every objective, and a manifest.

    `rated`: events with a score (`feedback_label`) and no correction: {event_id, prompt,
    response, thumbs_up, rating}. `corrected`: training-pool items {item_id, prompt, answer,
    response, source_event_id}. Only the training pool may come in here (the caller splits
    off the golden set by prompt hash, as for corrections).

    - a correction gives an SFT row (prompt -> correction) and, where the original response
      differs, a DPO pair (the correction chosen over the response);
    - two or more responses to the same prompt with different scores give one DPO pair, the
      best-scored chosen over the worst; a pair whose two texts are the same is quarantined;
    - every other rated event is a KTO row, desirable above `neutral[1]`, undesirable below
      `neutral[0]` (a score in between says nothing and is skipped).

    Rows carry `objective` ("sft", "dpo", "kto") and `sources` (the event ids behind them);
    the manifest counts each kind and quarantined pairs, and gives KTO's class weights from the
    balance of desirable and undesirable rows (`retrain.params.kto_weights`).
    """
    rows: list[dict[str, Any]] = []
    quarantined = {"identical_pair": 0, "too_long": 0}
    for item in sorted(corrected, key=lambda it: str(it["item_id"])):
        prompt, answer = str(item["prompt"]).strip(), str(item["answer"]).strip()
        response = str(item.get("response") or "").strip()
        if len(prompt) + len(answer) > max_chars:
            quarantined["too_long"] += 1
            continue
        src = [str(item.get("source_event_id") or item["item_id"])]
        rows.append(
            {"id": f"sft-{item['item_id']}", "objective": "sft", "prompt": prompt, "completion": answer, "sources": src}
        )
        if response and response != answer:
            rows.append(
                {
                    "id": f"dpo-{item['item_id']}",
                    "objective": "dpo",
                    "prompt": prompt,
                    "chosen": answer,
                    "rejected": response,
                    "sources": src,
                }
            )
    by_prompt: dict[str, list[dict[str, Any]]] = {}
    for e in sorted(rated, key=lambda e: str(e["event_id"])):
        score = feedback_label(e)
        prompt, response = str(e.get("prompt") or "").strip(), str(e.get("response") or "").strip()
        if score is None or not prompt or not response:
            continue
        if len(prompt) + len(response) > max_chars:
            quarantined["too_long"] += 1
            continue
        by_prompt.setdefault(normalise_prompt(prompt), []).append(
            {**e, "score": score, "prompt": prompt, "response": response}
        )
    singles: list[dict[str, Any]] = []
    for key in sorted(by_prompt):
        group = sorted(by_prompt[key], key=lambda e: (-e["score"], str(e["event_id"])))
        best, worst = group[0], group[-1]
        if len(group) >= 2 and best["score"] > worst["score"]:
            if best["response"] == worst["response"]:
                quarantined["identical_pair"] += 1  # the same text rated both ways: no preference
            else:
                rows.append(
                    {
                        "id": f"dpo-{best['event_id']}-{worst['event_id']}",
                        "objective": "dpo",
                        "prompt": best["prompt"],
                        "chosen": best["response"],
                        "rejected": worst["response"],
                        "sources": [str(best["event_id"]), str(worst["event_id"])],
                    }
                )
                group = group[1:-1]
        singles += group
    for e in singles:
        if neutral[0] <= e["score"] <= neutral[1]:
            continue
        rows.append(
            {
                "id": f"kto-{e['event_id']}",
                "objective": "kto",
                "prompt": e["prompt"],
                "completion": e["response"],
                "label": e["score"] > neutral[1],
                "sources": [str(e["event_id"])],
            }
        )
    counts = {k: sum(r["objective"] == k for r in rows) for k in ("sft", "dpo", "kto")}
    n_up = sum(1 for r in rows if r["objective"] == "kto" and r["label"])
    n_down = counts["kto"] - n_up
    manifest = {
        "counts": counts,
        "kto_desirable": n_up,
        "kto_undesirable": n_down,
        "quarantined": quarantined,
        "kto_weights": list(kto_weights(n_up, n_down)),
        "objective": auto_objective(counts),
        "sources": {r["id"]: r["sources"] for r in rows},
    }
    return rows, manifest


def auto_objective(counts: dict[str, int]) -> str:
    """What the data can feed: pairs with SFT rows -> mixed, pairs alone -> dpo, labelled singles
    -> kto, corrections alone -> sft; "none" where nothing can be trained."""
    if counts.get("dpo"):
        return "mixed" if counts.get("sft") else "dpo"
    if counts.get("kto"):
        return "kto"
    return "sft" if counts.get("sft") else "none"
