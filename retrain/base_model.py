"""Build the demo's small real causal LM, offline: a byte-level BPE tokenizer
trained on the demo world's text and a GPT-2-style model trained on the base
topics for a bounded time on CPU. Imports only torch, tokenizers and transformers.

    >>> path = build_demo_model("/tmp/demo-model", max_seconds=45)
    >>> # a folder loadable by AutoModelForCausalLM / AutoTokenizer / lm-eval's hf backend

The result is cached: a folder holding `driftloop_build.json` with the same
build parameters is returned as it is.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from driftloop.demo import world  # standard library only

BUILD_VERSION = 3


def build_tokenizer(texts: list[str], vocab_size: int = 800):
    """A GPT-2-style byte-level BPE tokenizer trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    fast.model_max_length = 128
    return fast


def build_demo_model(
    out_dir: str | Path,
    max_seconds: float = 40.0,
    max_steps: int = 400,
    seed: int = 0,
    n_layer: int = 2,
    n_embd: int = 128,
    progress=None,
) -> Path:
    """Train (or reuse) the demo base model in `out_dir`; returns the folder.

    `progress(step, total, loss)` is called now and then, if given.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    out = Path(out_dir)
    params = {"version": BUILD_VERSION, "seed": seed, "n_layer": n_layer, "n_embd": n_embd, "max_steps": max_steps}
    stamp = out / "driftloop_build.json"
    if stamp.exists():
        try:
            if json.loads(stamp.read_text()).get("params") == params:
                return out
        except (ValueError, OSError):
            pass
    torch.manual_seed(seed)
    random.seed(seed)
    tok = build_tokenizer(world.tokenizer_corpus(seed))
    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=128, n_embd=n_embd, n_layer=n_layer, n_head=4,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
    )
    model = GPT2LMHeadModel(cfg)
    pairs = world.training_corpus(n=6000, seed=seed)
    texts = [world.format_example(q, a) + tok.eos_token for q, a in pairs]
    enc = tok(texts, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)
    # The first eos closes the example and is learned; the padding after it is not.
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=max_steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    batch = 64
    model.train()
    t0 = time.monotonic()
    steps_done = 0
    loss_val = float("nan")
    for step in range(max_steps):
        idx = torch.randint(0, ids.shape[0], (batch,), generator=g)
        out_ = model(input_ids=ids[idx], attention_mask=mask[idx], labels=labels[idx])
        out_.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        steps_done = step + 1
        loss_val = float(out_.loss.detach())
        if progress and step % 50 == 0:
            progress(step, max_steps, loss_val)
        if time.monotonic() - t0 > max_seconds:
            break
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    stamp.write_text(json.dumps({
        "params": params, "steps": steps_done, "final_loss": loss_val,
        "seconds": round(time.monotonic() - t0, 1),
    }, indent=2))
    return out
