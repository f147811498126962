"""Plain causal attention for plain batches: SDPA's flash kernel, also under torch.compile.

For a batch with one sequence per row and no padding, transformers still
works out a mask: eagerly it checks the position ids for packed sequences (a
host sync every forward), and under torch.compile it cannot check them at
all, so it always builds a (B, 1, T, T) packed-sequence mask; SDPA then falls
back from the flash kernel (which skips the upper triangle and shares the GQA
key/value heads) to a masked kernel over the whole square, with keys and
values repeated to every head. `use_causal_sdpa` registers an attention
implementation that is transformers' own SDPA function, under a name that has
no mask function: transformers then passes no mask, and SDPA runs with
`is_causal=True`. The trainer switches to it only for batches it declares
plain (those it passes without position ids or attention mask); any other
batch runs on "sdpa" with its mask, as before.

    >>> with use_causal_sdpa(model) as declare_plain:
    ...     declare_plain(batch.position_ids is None and batch.attention_mask is None)
    ...     loss = causal_lm_loss(model, batch.input_ids, batch.labels)
"""

from __future__ import annotations

from contextlib import contextmanager

NAME = "driftloop_causal_sdpa"
_registered: bool | None = None


def register() -> bool:
    """Register the implementation with transformers (once); False if this transformers lacks
    the attention interface (then nothing changes)."""
    global _registered
    if _registered is None:
        try:
            from transformers.integrations.sdpa_attention import sdpa_attention_forward
            from transformers.modeling_utils import AttentionInterface

            AttentionInterface.register(NAME, sdpa_attention_forward)
            _registered = True
        except ImportError:
            _registered = False
    return _registered


@contextmanager
def use_causal_sdpa(model, enabled: bool = True):
    """While inside, a model whose attention is "sdpa" can run plain batches on the mask-free
    causal SDPA above: yields `declare_plain(flag)`, to call before each forward. The config
    is restored on exit (a saved model says "sdpa"). Other implementations, and
    `enabled=False`, change nothing."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = causal.config
    before = getattr(config, "_attn_implementation", None)
    switch = enabled and before == "sdpa" and register()

    def declare_plain(plain: bool) -> None:
        if switch:
            config._attn_implementation = NAME if plain else before

    try:
        yield declare_plain
    finally:
        if switch:
            config._attn_implementation = before
