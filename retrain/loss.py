"""Next-token cross-entropy that never holds the full logits.

For a 150k-token vocabulary the logits of one 8 x 2048 batch are 2.5 G values:
10 GB in fp32, and as much again for their gradient. `chunked_cross_entropy`
multiplies the last hidden states by the lm_head weight a chunk of tokens at
a time, takes an fp32 log-softmax per chunk, and computes the gradients for
the hidden states (and the weight, when it trains) in the same pass, so at
most one chunk of logits exists at any moment (the idea of Liger-Kernel's
fused linear cross-entropy, in plain torch). With `compiled=True` the
per-chunk softmax and its gradient are one torch.compile'd function: Inductor
fuses the fp32 cast, the log-sum-exp, the one-hot and the cast back into two
kernels that read the bf16 logits a few times and write the bf16 gradient
once, where eager torch makes ~8 passes over fp32 copies. `causal_lm_loss`
runs a Hugging Face causal LM (PEFT-wrapped or not) through its backbone and
this loss.

The preference objectives (retrain/objectives.py) need each sequence's summed
log-probability of its completion rather than a mean loss: `chunked_log_probs`
gives the per-token log-probabilities with the same chunking and the same
per-chunk kernel, and `sequence_logps` runs a model through it.

    >>> loss = causal_lm_loss(model, batch.input_ids, batch.labels, position_ids=batch.position_ids)
    >>> loss.backward()
    >>> sequence_logps(model, batch.input_ids, batch.labels, batch.attention_mask)  # (rows,)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Auto chunk: about this many bytes of fp32 logits per chunk, rounded down to a power of two
# tokens (so that B x 2^k-token batches split into equal chunks: one compiled shape). A GPU gets
# larger chunks: fewer, larger matmuls and fewer fp32 weight-gradient accumulations (full FT).
LOGITS_CHUNK_BYTES = {"cpu": 1 << 30, "cuda": 4 << 30}

_compiled_chunk = None  # torch.compile(_softmax_grad), built on first use


def auto_chunk_tokens(vocab_size: int, device_type: str = "cpu") -> int:
    """Tokens per chunk: the largest power of two whose fp32 logits fit in about 1 GiB on a CPU,
    4 GiB on a GPU (at least 128 tokens)."""
    budget = LOGITS_CHUNK_BYTES.get(device_type, LOGITS_CHUNK_BYTES["cpu"])
    return max(128, 1 << int(math.log2(max(1, budget // (4 * vocab_size)))))


def _softmax_grad(logits: torch.Tensor, target: torch.Tensor):
    """(per-row loss in fp32, softmax - one_hot(target) in logits' dtype) for one chunk, written
    for Inductor: every op is elementwise or a row reduction, so it fuses."""
    x = logits.float()
    lse = torch.logsumexp(x, dim=-1)
    rows = lse - x.gather(1, target[:, None])[:, 0]
    hot = torch.arange(x.shape[1], device=x.device)[None, :] == target[:, None]
    return rows, (torch.exp(x - lse[:, None]) - hot.to(x.dtype)).to(logits.dtype)


def _softmax_grad_eager(logits: torch.Tensor, target: torch.Tensor):
    # Same result in eager torch with few passes: one fused log-softmax into fp32, exp in place,
    # a scatter for the one-hot, one cast back. (No row masking here: the caller masks the
    # (n, d)-sized products, 1/100 of the work at a 150k vocabulary.)
    lsm = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
    rows = -lsm.gather(1, target[:, None])[:, 0]
    g = lsm.exp_()
    g.scatter_add_(1, target[:, None], torch.full_like(rows[:, None], -1.0))
    return rows, g.to(logits.dtype)


def _chunk_fn(compiled: bool):
    global _compiled_chunk
    if not compiled:
        return _softmax_grad_eager
    if _compiled_chunk is None:
        # dynamic=None: the first shape compiles static; a second chunk length recompiles once
        # with a symbolic row count (the vocabulary stays static).
        _compiled_chunk = torch.compile(_softmax_grad)
    return _compiled_chunk


class _ChunkedCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk, compiled):
        # hidden (N, d), weight (V, d), labels (N,) with -100 = ignored. Sum of losses, gradients
        # of that sum computed here; backward only scales them.
        n = hidden.shape[0]
        softmax_grad = _chunk_fn(compiled)
        valid = labels != -100
        target = labels.clamp(min=0)
        vmask = valid.to(hidden.dtype)[:, None]
        grad_h = torch.empty_like(hidden)
        want_w = weight.requires_grad
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        grad_b = (
            torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
            if bias is not None and bias.requires_grad
            else None
        )
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        # Equal chunks (at most `chunk` tokens): one shape for the compiled kernel in the usual case.
        size = -(-n // -(-n // chunk))
        for s in range(0, n, size):
            h, y, m = hidden[s : s + size], target[s : s + size], vmask[s : s + size]
            logits = h @ weight.t()
            if bias is not None:
                logits = logits + bias.to(logits.dtype)
            rows, g = softmax_grad(logits, y)
            del logits  # free the chunk's logits before the next matmul
            total += (rows * valid[s : s + size]).sum()
            # Ignored rows carry softmax - one_hot(0) in g: zero them on the small side.
            grad_h[s : s + size] = (g @ weight) * m
            if grad_w is not None:
                grad_w += (g.t() @ (h * m)).float()
            if grad_b is not None:
                grad_b += (m[:, 0].to(g.dtype) @ g).float()
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
        return gh, gw, gb, None, None, None


def chunked_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_tokens: int = 0,
    compiled: bool = False,
) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T (+ bias)` against `labels` (-100 = ignored), equal
    to `F.cross_entropy(logits.float(), labels)`, computed at most `chunk_tokens` rows at a time
    (0: auto_chunk_tokens). `hidden` is (N, d) or (B, T, d) with labels already aligned (shifted)
    to it. The matmuls run in `hidden`'s dtype; the softmax in fp32. `compiled` runs the per-chunk
    softmax and gradient as one torch.compile'd function (GPU; compiling on a CPU takes a while)."""
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    chunk = chunk_tokens or auto_chunk_tokens(weight.shape[0], hidden.device.type)
    weight = weight if weight.dtype == hidden.dtype else weight.to(hidden.dtype)
    total = _ChunkedCE.apply(hidden, weight, bias, labels, chunk, compiled)
    return total / (labels != -100).sum().clamp(min=1)


class _ChunkedLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk, compiled, want_hidden_grad):
        # hidden (N, d), weight (V, d), labels (N,) with -100 = ignored. Returns log p(label) per
        # row in fp32 (0 where ignored). Unlike the CE sum, the gradient that comes back is one
        # value per row, unknown here: keep d logp_t / d h_t = (one_hot - softmax) @ W per row (as
        # large as `hidden`; scaled in backward) and recompute the logits in backward only for the
        # weight's gradient (full fine-tuning).
        n = hidden.shape[0]
        softmax_grad = _chunk_fn(compiled)
        valid = labels != -100
        target = labels.clamp(min=0)
        vmask = valid.to(hidden.dtype)[:, None]
        out = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if want_hidden_grad else None
        size = -(-n // -(-n // chunk)) if n else 1
        for s in range(0, n, size):
            logits = hidden[s : s + size] @ weight.t()
            if bias is not None:
                logits = logits + bias.to(logits.dtype)
            rows, g = softmax_grad(logits, target[s : s + size])  # rows: -log p; g: softmax - one_hot
            del logits
            out[s : s + size] = -rows * valid[s : s + size]
            if grad_h is not None:
                grad_h[s : s + size] = -(g @ weight) * vmask[s : s + size]
        # The hidden states are kept only where the weight or bias trains (backward recomputes the logits).
        head_trains = weight.requires_grad or (bias is not None and bias.requires_grad)
        ctx.save_for_backward(hidden if head_trains else None, weight, bias, labels, grad_h)
        ctx.chunk, ctx.compiled = size, compiled
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, labels, grad_h = ctx.saved_tensors
        gh = gw = gb = None
        if ctx.needs_input_grad[0]:
            gh = grad_h * grad_out[:, None].to(grad_h.dtype)
        want_w = ctx.needs_input_grad[1]
        want_b = bias is not None and ctx.needs_input_grad[2]
        if want_w or want_b:
            softmax_grad = _chunk_fn(ctx.compiled)
            target = labels.clamp(min=0)
            # d sum_t c_t logp_t / d logits_t = -c_t (softmax_t - one_hot_t), c_t = grad_out_t on valid rows
            scale = (grad_out * (labels != -100)).to(hidden.dtype)[:, None]
            gw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
            gb = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if want_b else None
            for s in range(0, hidden.shape[0], ctx.chunk):
                h, c = hidden[s : s + ctx.chunk], scale[s : s + ctx.chunk]
                logits = h @ weight.t()
                if bias is not None:
                    logits = logits + bias.to(logits.dtype)
                _, g = softmax_grad(logits, target[s : s + ctx.chunk])
                del logits
                if gw is not None:
                    gw -= (g.t() @ (h * c)).float()
                if gb is not None:
                    gb -= (c[:, 0].to(g.dtype) @ g).float()
            gw = gw.to(weight.dtype) if gw is not None else None
            gb = gb.to(bias.dtype) if gb is not None else None
        return gh, gw, gb, None, None, None, None


def chunked_log_probs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_tokens: int = 0,
    compiled: bool = False,
) -> torch.Tensor:
    """log p(label) of each position of `hidden @ weight.T (+ bias)`, in fp32 and 0 where the
    label is -100: `log_softmax(logits.float()).gather(labels)` without ever holding more than
    `chunk_tokens` rows of logits (0: auto_chunk_tokens), differentiable in `hidden`, `weight`
    and `bias`. `hidden` is (N, d) or (B, T, d) with labels aligned (shifted) to it; the result
    has the labels' shape. `compiled` as for chunked_cross_entropy."""
    shape = labels.shape
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    chunk = chunk_tokens or auto_chunk_tokens(weight.shape[0], hidden.device.type)
    weight = weight if weight.dtype == hidden.dtype else weight.to(hidden.dtype)
    want_h = torch.is_grad_enabled() and hidden.requires_grad
    return _ChunkedLogProbs.apply(hidden, weight, bias, labels, chunk, compiled, want_h).view(shape)


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels aligned to the positions that predict them: position t gets label t+1, the last
    position -100. Shifting the labels rather than slicing the hidden states keeps the hidden
    states contiguous and the token count a round B x T."""
    return F.pad(labels[:, 1:], (0, 1), value=-100)


def causal_lm_loss(
    model,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask=None,
    position_ids=None,
    chunked: bool = True,
    chunk_tokens: int = 0,
    backbone=None,
    compiled_loss: bool = False,
) -> torch.Tensor:
    """Mean next-token loss of a causal LM over the tokens whose label is not -100 (position t
    predicts label t+1). With `chunked`, the model's backbone gives the hidden states and
    `chunked_cross_entropy` does the rest; otherwise (or when the head is not a plain linear
    layer, e.g. LoRA on lm_head) the full logits are taken. `backbone` may be a compiled copy of
    `decoder_backbone(model)`; `compiled_loss` compiles the loss's per-chunk softmax."""
    head = _output_head(model) if chunked else None
    if head is None:
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).logits
        return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    backbone = backbone if backbone is not None else decoder_backbone(model)
    hidden = backbone(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    weight, bias = head
    if torch.is_autocast_enabled(hidden.device.type):
        hidden = hidden.to(torch.get_autocast_dtype(hidden.device.type))
    with torch.autocast(hidden.device.type, enabled=False):
        return chunked_cross_entropy(hidden, weight, shift_labels(labels), bias, chunk_tokens, compiled_loss)


def sequence_logps(
    model,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask=None,
    position_ids=None,
    chunked: bool = True,
    chunk_tokens: int = 0,
    backbone=None,
    compiled_loss: bool = False,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summed log-probability of each row's labelled tokens (those not -100; position t predicts
    label t+1), shape (rows,), fp32: log pi(completion | prompt) when the prompt is labelled
    -100, as TRL's DPOTrainer and KTOTrainer sum it. Chunked from the hidden states like
    `causal_lm_loss` (full logits never exist), else, or for a wrapped head, from the logits.
    `targets` (packing.Batch.targets) limits the chunked head to the labelled positions: the
    prompt's share of the head's work is skipped (TRL's fused head does the same on GPUs)."""
    head = _output_head(model) if chunked else None
    if head is None:
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).logits
        target = labels[:, 1:]
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
        return (logp * (target != -100)).sum(-1)
    backbone = backbone if backbone is not None else decoder_backbone(model)
    hidden = backbone(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    weight, bias = head
    if torch.is_autocast_enabled(hidden.device.type):
        hidden = hidden.to(torch.get_autocast_dtype(hidden.device.type))
    with torch.autocast(hidden.device.type, enabled=False):
        shifted = shift_labels(labels)
        if targets is None:
            return chunked_log_probs(hidden, weight, shifted, bias, chunk_tokens, compiled_loss).sum(-1)
        picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, targets)
        logp = chunked_log_probs(
            picked, weight, shifted.reshape(-1).index_select(0, targets), bias, chunk_tokens, compiled_loss
        )
        return logp.new_zeros(labels.shape[0]).index_add(0, targets // labels.shape[1], logp)


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
