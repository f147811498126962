"""Data-parallel training across processes started by `torchrun` (or `accelerate launch`).

Each process trains a replica on its share of every step's examples; after the
backward pass the gradients are summed over processes, each process's loss
having been weighted by its share of the step's target tokens, so the update
is the one a single process would make on the whole batch (the loss is the
mean over all completion tokens of the step). Rank 0 alone writes
checkpoints and the result folder. Outside torchrun (no WORLD_SIZE > 1)
everything here is a no-op.

    $ torchrun --nproc_per_node 8 -m retrain.job runs/r1.spec.json

Backend: NCCL on CUDA (one GPU per process, cuda:LOCAL_RANK), gloo on CPU.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the process group when launched by torchrun; returns (rank, world size, this
    process's device). A single process gets (0, 1, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def world_size() -> int:
    """Processes in the group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def sum_(value: torch.Tensor) -> torch.Tensor:
    """`value` summed over all processes (a copy; the input itself when not distributed)."""
    if world_size() == 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out


def sum_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over processes, in flat buckets (one collective per ~25M
    values rather than one per tensor)."""
    if world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    bucket, size = [], 0
    for g in grads + [None]:
        if g is not None:
            bucket.append(g)
            size += g.numel()
        if bucket and (g is None or size >= 25_000_000):
            flat = torch.cat([b.reshape(-1) for b in bucket])
            dist.all_reduce(flat)
            at = 0
            for b in bucket:
                b.copy_(flat[at : at + b.numel()].view_as(b))
                at += b.numel()
            bucket, size = [], 0


def barrier() -> None:
    """Wait for every process (no-op when not distributed)."""
    if world_size() > 1:
        dist.barrier()


def teardown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
