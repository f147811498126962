"""Precision helpers for the trainer: bf16-pure master weights, and peft's LoRA input cast.

`MasterWeights` backs `precision: bf16-pure`: the model holds bf16 weights (no
autocast, so activations, the residual stream and gradients are bf16 too) and
the optimizer updates fp32 master copies. `lora_input_cast` turns off peft's
cast of each LoRA layer's input to the adapter's dtype where autocast makes it
a wasted round trip.

    >>> masters = MasterWeights([p for p in model.parameters() if p.requires_grad])
    >>> opt = torch.optim.AdamW(masters.masters, lr=1e-4)
    >>> loss.backward(); masters.pull_grads(); opt.step(); masters.push()
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class MasterWeights:
    """bf16-pure training: the model computes in bf16 weights, the optimizer updates fp32 master
    copies. Each step the bf16 gradients are copied into the masters' fp32 gradients
    (`pull_grads`) and, after the update, the masters are rounded into the model (`push`), so an
    update smaller than bf16's resolution (2^-8 relative) still accumulates in the master
    instead of being rounded away. No autocast: activations, residual stream and weight
    gradients stay bf16, and no weight is re-cast on every forward."""

    def __init__(self, params: list[torch.nn.Parameter]):
        self.params = params
        self.masters = [torch.nn.Parameter(p.detach().float().clone()) for p in params]
        with torch.no_grad():
            for p in params:
                p.data = p.data.to(torch.bfloat16)

    def pull_grads(self) -> None:
        """Move the model's bf16 gradients into fp32 master gradients (and drop the bf16 ones)."""
        for p, m in zip(self.params, self.masters):
            m.grad = None if p.grad is None else p.grad.float()
            p.grad = None

    def push(self) -> None:
        """Round the updated masters into the model's bf16 weights."""
        with torch.no_grad():
            for p, m in zip(self.params, self.masters):
                p.copy_(m)

    def release(self) -> None:
        """Give the model its fp32 masters back as its weights (end of training)."""
        for p, m in zip(self.params, self.masters):
            p.data = m.detach()


@contextmanager
def lora_input_cast(model, enabled: bool):
    """While inside, peft's LoRA layers cast their input to the adapter dtype only if `enabled`
    (restored on exit)."""
    # peft casts each LoRA layer's input to the adapter's dtype: under bf16 autocast that is a
    # bf16 -> fp32 copy of every targeted activation that autocast casts straight back to bf16.
    layers = [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    before = [m.cast_input_dtype_enabled for m in layers]
    for m in layers:
        m.cast_input_dtype_enabled = enabled and m.cast_input_dtype_enabled
    try:
        yield
    finally:
        for m, b in zip(layers, before):
            m.cast_input_dtype_enabled = b
