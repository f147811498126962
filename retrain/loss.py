"""Next-token cross-entropy that never holds the full logits.

For a 150k-token vocabulary the logits of one 8 x 2048 batch are 2.5 G values:
10 GB in fp32, and as much again for their gradient. `chunked_cross_entropy`
multiplies the last hidden states by the lm_head weight a chunk of tokens at
a time, takes an fp32 log-sum-exp per chunk, and computes the gradients for
the hidden states (and the weight, when it trains) in the same pass, so at
most one chunk of logits exists at any moment (the idea of Liger-Kernel's
fused linear cross-entropy, in plain torch). `causal_lm_loss` runs a Hugging
Face causal LM (PEFT-wrapped or not) through its backbone and this loss.

    >>> loss = causal_lm_loss(model, batch.input_ids, batch.labels, position_ids=batch.position_ids)
    >>> loss.backward()
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOGITS_CHUNK_BYTES = 1 << 30  # auto chunk: ~1 GiB of fp32 logits at a time


def auto_chunk_tokens(vocab_size: int) -> int:
    """Tokens per chunk so that one chunk's fp32 logits take about 1 GiB (at least 128 tokens)."""
    return max(128, LOGITS_CHUNK_BYTES // (4 * vocab_size))


class _ChunkedCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk):
        # hidden (N, d), weight (V, d), labels (N,) with -100 = ignored. Sum of losses, gradients
        # of that sum computed here; backward only scales them.
        n = hidden.shape[0]
        grad_h = torch.empty_like(hidden)
        want_w = weight.requires_grad
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) \
            if bias is not None and bias.requires_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for s in range(0, n, chunk):
            h, y = hidden[s:s + chunk], labels[s:s + chunk]
            logits = (h @ weight.t()).float()
            if bias is not None:
                logits += bias.float()
            valid = y != -100
            target = y.clamp(min=0)
            lse = torch.logsumexp(logits, dim=-1)
            total += ((lse - logits.gather(1, target[:, None])[:, 0]) * valid).sum()
            # d(sum loss)/d(logits) = softmax - one_hot, zero on ignored tokens; reuses the chunk's buffer.
            g = logits.sub_(lse[:, None]).exp_()
            g.scatter_add_(1, target[:, None], torch.full_like(lse[:, None], -1.0))
            g.mul_(valid[:, None])
            if grad_b is not None:
                grad_b += g.sum(0)
            g = g.to(h.dtype)
            grad_h[s:s + chunk] = g @ weight
            if grad_w is not None:
                grad_w += (g.t() @ h).float()
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        gh = grad_h * grad_out.to(grad_h.dtype)
        gw = (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None
        gb = (grad_b * grad_out).to(ctx.bias_dtype) if grad_b is not None else None
        return gh, gw, gb, None, None


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                          bias: torch.Tensor | None = None, chunk_tokens: int = 0) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T (+ bias)` against `labels` (-100 = ignored), equal
    to `F.cross_entropy(logits.float(), labels)`, computed `chunk_tokens` rows at a time (0: about
    1 GiB of fp32 logits per chunk). `hidden` is (N, d) or (B, T, d) with labels already aligned
    (shifted) to it. The matmuls run in `hidden`'s dtype; log-sum-exp in fp32."""
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    chunk = chunk_tokens or auto_chunk_tokens(weight.shape[0])
    weight = weight if weight.dtype == hidden.dtype else weight.to(hidden.dtype)
    total = _ChunkedCE.apply(hidden, weight, bias, labels, chunk)
    return total / (labels != -100).sum().clamp(min=1)


def causal_lm_loss(model, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask=None, position_ids=None,
                   chunked: bool = True, chunk_tokens: int = 0, backbone=None) -> torch.Tensor:
    """Mean next-token loss of a causal LM over the tokens whose label is not -100 (position t
    predicts label t+1). With `chunked`, the model's backbone gives the hidden states and
    `chunked_cross_entropy` does the rest; otherwise (or when the head is not a plain linear
    layer, e.g. LoRA on lm_head) the full logits are taken. `backbone` may be a compiled copy of
    `decoder_backbone(model)`."""
    head = _output_head(model) if chunked else None
    if head is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False).logits
        return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    backbone = backbone if backbone is not None else decoder_backbone(model)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=False).last_hidden_state
    weight, bias = head
    if torch.is_autocast_enabled(hidden.device.type):
        hidden = hidden.to(torch.get_autocast_dtype(hidden.device.type))
    with torch.autocast(hidden.device.type, enabled=False):
        return chunked_cross_entropy(hidden[:, :-1], weight, labels[:, 1:], bias, chunk_tokens)


def decoder_backbone(model):
    """The transformer under a causal LM's head (`model.model`, `model.transformer`, ...), PEFT
    wrappers looked through; LoRA layers injected into it stay in place."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    return causal.base_model


def _output_head(model):
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = causal.get_output_embeddings()
    if type(head) is not torch.nn.Linear or getattr(causal.config, "final_logit_softcapping", None):
        return None  # a wrapped (LoRA) or soft-capped head: take the plain path
    return head.weight, head.bias
