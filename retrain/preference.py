"""Preference data for DPO and KTO: rows tokenised into training units, and the reference
log-probabilities they are scored against.

A `Pair` is a prompt with a chosen and a rejected completion (DPO); a `Rated`
is a prompt with one completion, desirable or not (KTO), plus a "KL"
sequence: the same prompt with another example's completion. KTO's reference
point is the policy-to-reference KL, estimated on such mismatched pairs; as in
TRL's KTOTrainer (trl/trainer/kto_trainer.py, `add_kl_completion_ids` in
`_prepare_dataset`), each example takes the completion of the one before it
within consecutive groups of `batch_size` examples in data order (the first
takes the group's last), truncated to `max_length`.

The reference log-probabilities are computed once, before the first update, in
eval mode without gradients: with LoRA or QLoRA on the base with the adapters
disabled (peft's `disable_adapter()`: the same weights, no second copy of the
model), with full fine-tuning on the weights as loaded. The frozen base never
changes, so a per-step reference forward (TRL's default with adapters) would
give the same numbers at a third more compute; for full fine-tuning, once is
the only option that keeps one copy of the model. The trainer keeps them in
the checkpoint, so a resumed job scores against the same numbers.

    >>> units, dropped = build_units(tokenizer, rows, "dpo", spec)
    >>> ref = score_units(model, units, score, 16, pad_id, device, reference=True)
    >>> ref["chosen"].shape, ref["rejected"].shape      # one value per pair
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from retrain.data import DataError, Encoded, encode_example, row_kind
from retrain.packing import Batch, collate_padded


@dataclass
class Pair:
    """A DPO pair: `index` is its position among the job's pairs (its reference entries)."""

    example: dict[str, Any]
    chosen: Encoded
    rejected: Encoded
    index: int


@dataclass
class Rated:
    """A KTO example: its completion, whether it is desirable, and its KL sequence (this prompt,
    another example's completion). `index` is its position among the job's rated examples."""

    example: dict[str, Any]
    completion: Encoded
    desirable: bool
    kl: Encoded
    index: int


Unit = Encoded | Pair | Rated  # Encoded: an SFT example (objective sft or mixed)

# Which row kinds each objective trains on.
USES = {"sft": ("sft",), "dpo": ("pair",), "kto": ("kto",), "mixed": ("sft", "pair")}


def count_kinds(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Rows per kind: {"sft", "pair", "kto"}."""
    counts = {"sft": 0, "pair": 0, "kto": 0}
    for r in rows:
        counts[row_kind(r)] += 1
    return counts


def count_units(units: list[Unit]) -> dict[str, int]:
    """Training units per kind: SFT examples, pairs, desirable and undesirable rated examples."""
    rated = [u for u in units if isinstance(u, Rated)]
    return {
        "sft": sum(isinstance(u, Encoded) for u in units),
        "pairs": sum(isinstance(u, Pair) for u in units),
        "desirable": sum(u.desirable for u in rated),
        "undesirable": sum(not u.desirable for u in rated),
    }


def resolve_objective(requested: str, rows: list[dict[str, Any]]) -> str:
    """The objective the job trains: `requested`, or for "auto" the one the data feeds (pairs:
    dpo, or mixed when corrections are there too; else rated rows: kto; else sft). An
    objective the data cannot feed raises DataError, e.g. "dpo: 0 pairs in the training data"."""
    counts = count_kinds(rows)
    objective = requested
    if requested == "auto":
        objective = ("mixed" if counts["sft"] else "dpo") if counts["pair"] else "kto" if counts["kto"] else "sft"
    names = {
        "sft": "corrections (rows with a completion and no label)",
        "pair": "pairs",
        "kto": "rated rows (with a true/false label)",
    }
    for kind in USES[objective]:
        if counts[kind] == 0:
            raise DataError(f"{objective}: 0 {names[kind]} in the training data")
    return objective


def build_units(tokenizer, rows: list[dict[str, Any]], objective: str, spec) -> tuple[list[Unit], int]:
    """The objective's training units in data order, and how many rows were dropped for being
    longer than `spec.max_length` tokens (a pair when either side is). Rows of kinds the
    objective does not use are left out (the caller counts them)."""
    units: list[Unit] = []
    rated: list[tuple[dict[str, Any], Encoded]] = []
    dropped = pairs = 0
    for row in rows:
        kind = row_kind(row)
        if kind not in USES[objective]:
            continue
        if kind == "pair":
            seqs = [encode_example(tokenizer, row, spec.prompt_template, row[k]) for k in ("chosen", "rejected")]
        else:
            seqs = [encode_example(tokenizer, row, spec.prompt_template)]
        if any(len(s.input_ids) > spec.max_length for s in seqs):
            dropped += 1
        elif kind == "pair":
            units.append(Pair(row, seqs[0], seqs[1], pairs))
            pairs += 1
        elif kind == "kto":
            rated.append((row, seqs[0]))
        else:
            units.append(seqs[0])
    group = max(1, spec.batch_size)
    for start in range(0, len(rated), group):
        block = rated[start : start + group]
        for k, (row, enc) in enumerate(block):
            other = block[k - 1][1]  # k = 0 takes the block's last: TRL's rotation by one
            units.append(Rated(row, enc, row["label"], _kl_sequence(enc, other, spec.max_length), start + k))
    return units, dropped


def _kl_sequence(own: Encoded, other: Encoded, max_length: int) -> Encoded:
    # own's prompt, other's completion (its eos included), cut to max_length as TRL's collator does.
    n_own, n_other = _prompt_length(own), _prompt_length(other)
    ids = (own.input_ids[:n_own] + other.input_ids[n_other:])[:max_length]
    labels = ([-100] * n_own + other.input_ids[n_other:])[:max_length]
    return Encoded(own.example, ids, labels)


def _prompt_length(e: Encoded) -> int:
    n = 0
    while n < len(e.labels) and e.labels[n] == -100:
        n += 1
    return n


Score = Callable[[Batch], torch.Tensor]  # a padded batch -> summed completion log-prob per row


def score_units(
    model, units: list[Unit], score: Score, batch_size: int, pad_id: int, device: torch.device, reference: bool = True
) -> dict[str, torch.Tensor]:
    """Summed completion log-probabilities of every preference sequence (fp32, on the CPU):
    {"chosen", "rejected"} per pair and {"completion", "kl"} per rated example, indexed by the
    units' `index`. `reference`: of the reference model (with adapters, peft, they are
    disabled); else of the policy as it is. Eval mode, no gradients; the model is left in the
    mode it was in."""
    pairs = sorted((u for u in units if isinstance(u, Pair)), key=lambda u: u.index)
    rated = sorted((u for u in units if isinstance(u, Rated)), key=lambda u: u.index)
    named = {
        "chosen": [u.chosen for u in pairs],
        "rejected": [u.rejected for u in pairs],
        "completion": [u.completion for u in rated],
        "kl": [u.kl for u in rated],
    }
    flat = [(name, e) for name, seqs in named.items() for e in seqs]
    if not flat:
        raise DataError("no preference examples to score")
    out: dict[str, list[torch.Tensor]] = {name: [] for name in named if named[name]}
    was_training = model.training
    adapters_off = model.disable_adapter() if reference and hasattr(model, "disable_adapter") else nullcontext()
    model.eval()
    try:
        with torch.no_grad(), adapters_off:
            step = max(1, 2 * batch_size)
            for s in range(0, len(flat), step):
                chunk = flat[s : s + step]
                logps = score(collate_padded([e for _, e in chunk], pad_id, device, with_targets=True)).float().cpu()
                for (name, _), v in zip(chunk, logps):
                    out[name].append(v)
    finally:
        model.train(was_training)
    return {name: torch.stack(vals) for name, vals in out.items()}
