"""Preference objectives: DPO from pairs, KTO from single thumbs, and SFT + DPO ("mixed").

Each loss is a function of summed completion log-probabilities (prompt tokens
masked, eos included; retrain/loss.py `sequence_logps`, chunked like the SFT
loss so full logits never exist) of the policy and of the reference model
(retrain/preference.py, computed once). They are TRL's losses, re-derived and
checked against TRL's trainers on the same batch, loss and gradients, in
tests/test_retrain_objectives.py:

- DPO, sigmoid (Rafailov et al. 2023): mean over pairs of
  -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))).
- KTO (Ethayarajh et al. 2024): z = max(0, mean over the batch's KL sequences
  of pi - ref), detached; a desirable completion costs
  w_d * (1 - sigmoid(beta * ((pi - ref) - z))), an undesirable one
  w_u * (1 - sigmoid(beta * (z - (pi - ref)))); the loss is the batch mean.
- mixed: the DPO loss on the step's pairs + sft_weight x the mean cross-entropy
  over the completion tokens of the step's corrections (TRL's DPOTrainer with
  loss_type ["sigmoid", "sft"] when the corrections are the chosen sides).

They train without dropout, as TRL's DPOConfig/KTOConfig do by default
(`disable_dropout`): dropout would make the policy differ from the reference
by noise alone, which the loss would then learn from. They train without
packing: a step is padded rows, one sequence each.

    >>> objective = Objective("dpo", spec, units)
    >>> objective.start(model, score, pad_id, device)          # reference log-probs, once
    >>> loss, tokens, slots = objective.loss(step_units, score, pad_id, device)
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from retrain.data import Encoded
from retrain.loss import sequence_logps
from retrain.packing import collate_padded
from retrain.preference import Pair, Rated, Score, Unit, score_units

Total = Callable[[torch.Tensor], torch.Tensor]  # sum over the data-parallel processes (identity for one)


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair sigmoid DPO loss, chosen rewards, rejected rewards); a reward is
    beta * (policy - reference) summed completion log-prob, detached.

        >>> losses, rc, rr = dpo_loss(pc, pr, ref_c, ref_r, beta=0.1)
        >>> loss = losses.mean()
    """
    # TRL: trl/trainer/dpo_trainer.py, DPOTrainer._compute_loss: loss_type "sigmoid" with the
    # default f_divergence_type "reverse_kl" (scores are the log-ratios), no label smoothing.
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def kto_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-example KTO loss, rewards beta * (policy - reference), detached) for completions
    whose `desirable` flag (bool tensor) says thumbs up or down, against the reference point
    `kl` (kto_reference_point).

        >>> losses, rewards = kto_loss(pi, ref, desirable, kto_reference_point(pi_kl, ref_kl), beta=0.1)
        >>> loss = losses.mean()
    """
    # TRL: trl/trainer/kto_trainer.py, KTOTrainer._compute_loss, loss_type "kto" (eq. 7 of the
    # paper): chosen 1 - sigmoid(beta (logratio - kl)), rejected 1 - sigmoid(beta (kl - logratio)),
    # each class times its weight, then the mean over the batch.
    logratios = logps - ref_logps
    up = desirable_weight * (1 - torch.sigmoid(beta * (logratios - kl)))
    down = undesirable_weight * (1 - torch.sigmoid(beta * (kl - logratios)))
    return torch.where(desirable, up, down), beta * logratios.detach()


def kto_reference_point(kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """KTO's z: the batch mean of policy - reference log-probs of the mismatched (KL) sequences,
    detached and clamped at 0 (TRL: kto_trainer.py `kl = (KL_logps - ref_KL_logps).mean().detach()`,
    then `.clamp(min=0)` after the cross-process mean)."""
    return (kl_logps - ref_kl_logps).mean().detach().clamp(min=0)


def scorer(model, spec, backbone=None) -> Score:
    """The job's `score(batch)`: summed completion log-prob per row of a padded batch, through
    the same head as the SFT loss (chunked from the hidden states, completion positions only,
    or from the full logits without `chunked_loss`); `backbone` may be a compiled copy."""

    def score(batch) -> torch.Tensor:
        if spec.chunked_loss:
            return sequence_logps(
                model,
                batch.input_ids,
                batch.labels,
                batch.attention_mask,
                batch.position_ids,
                chunk_tokens=spec.loss_chunk_tokens,
                backbone=backbone,
                compiled_loss=spec.compile,
                targets=batch.targets,
            )
        return sequence_logps(
            model if backbone is None else backbone,
            batch.input_ids,
            batch.labels,
            batch.attention_mask,
            batch.position_ids,
            chunked=False,
        )

    return score


@contextmanager
def without_dropout(model):
    """While inside, every torch.nn.Dropout of `model` (LoRA's included) has p = 0; restored on
    exit. TRL: trl/trainer/utils.py `disable_dropout_in_model`, which DPO and KTO apply by default."""
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    before = [m.p for m in drops]
    for m in drops:
        m.p = 0.0
    try:
        yield
    finally:
        for m, p in zip(drops, before):
            m.p = p


class Objective:
    """The dpo, kto or mixed objective over one job's units (retrain/preference.py
    `build_units`): holds their reference log-probabilities and turns a step's units into a
    loss. Data parallel: each process passes its share, `total` sums over processes, and the
    loss is normalised by the step's global counts (pairs, examples, SFT tokens), so that the
    summed gradients are those of the whole step."""

    def __init__(self, name: str, spec, units: list[Unit]):
        if name not in ("dpo", "kto", "mixed"):
            raise ValueError(f"objective: {name!r} is not a preference objective")
        self.name, self.spec, self.units = name, spec, units
        self.reference: dict[str, torch.Tensor] | None = None  # on the CPU: what the checkpoint keeps
        self._ref: dict[str, torch.Tensor] = {}  # on the training device

    def start(
        self, model, score: Score, pad_id: int, device: torch.device, saved: dict[str, torch.Tensor] | None = None
    ) -> None:
        """Take the reference log-probs from a checkpoint (`saved`) or compute them now, before
        the first update."""
        self.reference = (
            saved
            if saved is not None
            else score_units(model, self.units, score, self.spec.batch_size, pad_id, device, reference=True)
        )
        self._ref = {k: v.to(device) for k, v in self.reference.items()}

    def loss(
        self,
        units: list[Unit],
        score: Score,
        pad_id: int,
        device: torch.device,
        real: bool = True,
        total: Total = lambda x: x,
    ) -> tuple[torch.Tensor, int, int]:
        """(loss, tokens, token slots) of one step's `units` on this process. `real` False: a
        stand-in share that trains nothing (weight 0, counted nowhere)."""
        w = 1.0 if real else 0.0
        if self.name == "kto":
            return self._kto(units, score, pad_id, device, w, total)
        sft = [u for u in units if isinstance(u, Encoded)]
        pairs = [u for u in units if isinstance(u, Pair)]
        batch = collate_padded(
            sft + [p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id, device, with_targets=True
        )
        logps = score(batch)
        loss = logps.new_zeros(())
        if self.name == "mixed":
            sft_tokens = total((batch.labels[: len(sft), 1:] != -100).sum().float() * w).clamp(min=1)
            loss = loss + self.spec.sft_weight * (-logps[: len(sft)].sum() * w) / sft_tokens
        n_pairs = total(torch.tensor(len(pairs) * w, device=device)).clamp(min=1)
        if pairs:
            idx = torch.tensor([p.index for p in pairs], device=device)
            k, n = len(sft), len(pairs)
            losses, _, _ = dpo_loss(
                logps[k : k + n], logps[k + n :], self._ref["chosen"][idx], self._ref["rejected"][idx], self.spec.beta
            )
            loss = loss + losses.sum() * w / n_pairs
        return loss, batch.tokens, batch.slots

    def _kto(self, units, score, pad_id, device, w, total) -> tuple[torch.Tensor, int, int]:
        rated = [u for u in units if isinstance(u, Rated)]
        idx = torch.tensor([u.index for u in rated], device=device)
        batch = collate_padded([u.completion for u in rated], pad_id, device, with_targets=True)
        logps = score(batch)
        with torch.no_grad():  # TRL: the policy's KL log-probs are taken without gradients
            kl_logps = score(collate_padded([u.kl for u in rated], pad_id, device, with_targets=True))
        n = total(torch.tensor(len(rated) * w, device=device)).clamp(min=1)
        kl = (total((kl_logps - self._ref["kl"][idx]).sum() * w) / n).detach().clamp(min=0)
        desirable = torch.tensor([u.desirable for u in rated], device=device)
        losses, _ = kto_loss(
            logps,
            self._ref["completion"][idx],
            desirable,
            kl,
            self.spec.beta,
            self.spec.kto_desirable_weight,
            self.spec.kto_undesirable_weight,
        )
        return losses.sum() * w / n, batch.tokens, batch.slots

    def evaluate(self, model, score: Score, pad_id: int, device: torch.device) -> dict[str, Any]:
        """Rewards of the trained policy on its training data (eval mode, no gradients): for
        pairs the mean reward margin of chosen over rejected and the share of pairs where
        chosen wins (reward accuracy); for rated examples the mean reward of each class, their
        margin, and the KL estimate."""
        policy = score_units(model, self.units, score, self.spec.batch_size, pad_id, device, reference=False)
        beta, ref, out = self.spec.beta, self.reference, {}
        if "chosen" in policy:
            rc = beta * (policy["chosen"] - ref["chosen"])
            rr = beta * (policy["rejected"] - ref["rejected"])
            out.update(
                reward_margin=_r((rc - rr).mean()),
                reward_accuracy=_r((rc > rr).float().mean()),
                rewards_chosen=_r(rc.mean()),
                rewards_rejected=_r(rr.mean()),
            )
        if "completion" in policy:
            rewards = beta * (policy["completion"] - ref["completion"])
            up = torch.tensor(
                [u.desirable for u in sorted((u for u in self.units if isinstance(u, Rated)), key=lambda u: u.index)]
            )
            if up.any():
                out["rewards_desirable"] = _r(rewards[up].mean())
            if (~up).any():
                out["rewards_undesirable"] = _r(rewards[~up].mean())
            if up.any() and (~up).any():
                out["reward_margin"] = round(out["rewards_desirable"] - out["rewards_undesirable"], 6)
            out["kl"] = _r(kto_reference_point(policy["kl"], ref["kl"]))
        return out


def _r(x: torch.Tensor) -> float:
    return round(float(x), 6)
