"""Batches for the training loop: plain right-padded rows, or packed rows with no
padding between examples.

Packing places a step's examples end to end in rows of at most `capacity`
tokens (first-fit decreasing), with position ids that restart at 0 for each
example and no attention mask. transformers reads restarting position ids as
packed sequences: flash-attention kernels take them as varlen boundaries, and
sdpa/eager/flex build a block-diagonal causal mask from them, so no example
attends to another. The first token of each example gets label -100, so the
last token of one example is never trained to predict the next one: the loss
is the same as for the unpacked batch (tests/test_retrain_speed.py checks it).

    >>> batch = collate_packed(examples, capacity=96, pad_id=0, device=torch.device("cpu"))
    >>> batch.input_ids.shape      # (rows, width): rows * width - batch.tokens pad tokens in all
    torch.Size([3, 94])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


class Example(Protocol):
    input_ids: list[int]
    labels: list[int]


@dataclass
class Batch:
    """Model inputs for one step. `position_ids` is set (and `attention_mask` None) when packed;
    `tokens` counts real tokens, padding excluded."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor | None
    position_ids: torch.Tensor | None
    tokens: int
    # Flat indices (row * width + t) of the positions whose next token is labelled, when asked for
    # (collate_padded's with_targets): a log-prob head then scores the completions only, and
    # the indices are made on the host, so using them costs no device sync.
    targets: torch.Tensor | None = None

    @property
    def slots(self) -> int:
        """Token slots the model computes over (real tokens + padding)."""
        return self.input_ids.numel()


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Group example indices into rows whose summed lengths stay within `capacity` tokens:
    first-fit decreasing, which wastes at most a few percent on typical length mixes. An example
    longer than `capacity` gets a row of its own."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def collate_padded(batch: list[Example], pad_id: int, device: torch.device, with_targets: bool = False) -> Batch:
    """One example per row, right-padded to the longest; padding is masked out of attention and loss.
    `with_targets` also gives `Batch.targets`."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    targets = None
    if with_targets:
        predicts = torch.zeros_like(labels, dtype=torch.bool)
        predicts[:, :-1] = labels[:, 1:] != -100  # position t predicts label t + 1
        targets = _to(predicts.flatten().nonzero()[:, 0], device)
    return Batch(_to(ids, device), _to(labels, device), _to(mask, device), None, int(mask.sum()), targets)


def collate_packed(
    batch: list[Example], capacity: int, pad_id: int, device: torch.device, static_width: bool = False
) -> Batch:
    """The batch's examples packed into rows of at most `capacity` tokens, rows padded only to
    the fullest row (or, with `static_width`, to `capacity`: one shape for torch.compile). Each
    example restarts its position ids at 0; its first label is -100."""
    rows = pack_rows([len(e.input_ids) for e in batch], capacity)
    width = max(sum(len(batch[i].input_ids) for i in row) for row in rows)
    if static_width:
        width = max(width, capacity)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    tokens = 0
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            e, n = batch[i], len(batch[i].input_ids)
            ids[r, at : at + n] = torch.tensor(e.input_ids)
            labels[r, at + 1 : at + n] = torch.tensor(e.labels[1:])  # never predict across a boundary
            pos[r, at : at + n] = torch.arange(n)
            at += n
        tokens += at
        # Tail padding keeps position 0 (always a valid position): each pad token is a sequence
        # of its own to the mask, attending to nothing real.
    if all(len(row) == 1 for row in rows) and tokens == ids.numel():
        # One full-width example per row: nothing to separate. No position ids keeps the plain
        # causal path (flash kernels, also under torch.compile, which cannot skip a packed mask).
        return Batch(_to(ids, device), _to(labels, device), None, None, tokens)
    return Batch(_to(ids, device), _to(labels, device), None, _to(pos, device), tokens)


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    # A plain host-to-GPU copy synchronises the stream (the CPU waits for all queued GPU work);
    # from pinned memory it is queued like a kernel and the CPU runs on to the next step.
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
