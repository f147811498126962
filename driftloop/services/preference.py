"""The golden side's preference pairs: what the preference target suite is made of.

Rated feedback (thumbs, ratings) on prompts of the golden side of the split, and the golden
corrections, become (chosen, rejected) pairs by the same rules that make training pairs on the
training side (`retrain.curate.build_preference_set`): two replies to one prompt rated
differently give one pair (the best-rated chosen over the worst), a correction is chosen over the
reply it corrected, a pair whose replies are the same text is quarantined. The split is
`evaluators.golden.split_of`, the one the corrections follow, so a pair's prompt never trains.

    >>> pairs, quarantined = golden_pairs(store, cfg.golden)
    >>> pairs[0].keys()
    dict_keys(['item_id', 'prompt_key', 'prompt', 'chosen', 'rejected', 'sources'])
"""

from __future__ import annotations

from typing import Any

from driftloop.core.config import GoldenConfig
from driftloop.store import Store
from driftloop.store.feedback_reads import rated_events
from evaluators.golden import GOLDEN, prompt_key, split_of
from evaluators.preference_task import pair_id
from retrain.curate import build_preference_set

__all__ = ["golden_pairs", "pairs_from_feedback"]


def pairs_from_feedback(
    rated: list[dict[str, Any]], golden_items: list[dict[str, Any]], splits: dict[str, str], cfg: GoldenConfig
) -> tuple[list[dict[str, Any]], int]:
    """(pairs on the golden side, pairs quarantined as identical) from rated events {event_id,
    prompt, response, thumbs_up, rating} and golden items {item_id, prompt, answer, response,
    source_event_id}. Rated events on a training-side prompt are left out."""
    held = [e for e in rated if split_of(str(e.get("prompt") or ""), splits, cfg) == GOLDEN]
    rows, manifest = build_preference_set(held, golden_items)
    pairs = []
    for r in rows:
        if r["objective"] != "dpo":
            continue
        key = prompt_key(r["prompt"], cfg.salt)
        pairs.append(
            {
                "item_id": pair_id(key, r["chosen"], r["rejected"]),
                "prompt_key": key,
                "prompt": r["prompt"],
                "chosen": r["chosen"],
                "rejected": r["rejected"],
                "sources": r["sources"],
            }
        )
    return pairs, int(manifest["quarantined"]["identical_pair"])


def golden_pairs(store: Store, cfg: GoldenConfig) -> tuple[list[dict[str, Any]], int]:
    """The stored feedback's golden-side pairs and the number quarantined (see `pairs_from_feedback`)."""
    return pairs_from_feedback(rated_events(store), store.items(GOLDEN), store.item_splits(), cfg)
