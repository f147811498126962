"""Build the demo's small real causal LM, offline: a byte-level BPE tokenizer
trained on the demo world's text and a GPT-2-style model trained on the base
topics' Q/A pairs, plus plain sentences of every topic (the words a pretrained
LM would know, without billing's question -> answer mapping), for a bounded
time on CPU. Imports only torch, tokenizers, transformers and the demo world.

    >>> path = build_demo_model("/tmp/demo-model", max_seconds=45)
    >>> # a folder loadable by AutoModelForCausalLM / AutoTokenizer / lm-eval's hf backend

The folder also holds `replay.jsonl`: distinct (question, answer) pairs the
model was trained on, as {"id", "prompt", "completion"} rows, which
retrain.curate mixes into every fine-tune as replay.

The result is cached: a folder holding `driftloop_build.json` with the same
build parameters is returned as it is.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import torch

from driftloop.demo import world  # standard library only

BUILD_VERSION = 4  # 4: replay.jsonl, general text, time-fitted schedule
REPLAY_SIZE = 1000  # distinct training pairs kept for replay
GENERAL_LINES = 1500  # plain sentences of every topic: the "general language" a pretrained LM knows


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
    min_steps: int = 150,
    seed: int = 0,
    n_layer: int = 2,
    n_embd: int = 128,
    progress=None,
) -> Path:
    """Train (or reuse) the demo base model in `out_dir`; returns the folder.

    Training stops after `max_steps` or `max_seconds`, whichever comes first, but never
    before `min_steps` (the base topics are learned by ~150 steps of 64 texts; a loaded
    machine must not yield a half-trained model). The learning-rate schedule is fitted
    to the steps that the time allows, estimated after 20 steps, so the run ends annealed.
    `progress(step, total, loss)` is called now and then, if given.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    out = Path(out_dir)
    params = {
        "version": BUILD_VERSION,
        "seed": seed,
        "n_layer": n_layer,
        "n_embd": n_embd,
        "max_steps": max_steps,
        "min_steps": min(min_steps, max_steps),
    }
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
        vocab_size=len(tok),
        n_positions=128,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=4,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )
    model = GPT2LMHeadModel(cfg)
    pairs = world.training_corpus(n=6000, seed=seed)
    texts = [world.format_example(q, a) for q, a in pairs] + general_text(n=GENERAL_LINES, seed=seed)
    enc = tok([t + tok.eos_token for t in texts], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)
    # The first eos closes the example and is learned; the padding after it is not.
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    total = max_steps  # shrunk after a few steps if max_seconds cannot fit them
    warmup = max(1, max_steps // 10)
    # Linear warmup, then linear decay to zero at `total`, so even a time-capped build ends annealed.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else max(0.02, (total - s) / max(1, total - warmup))
    )
    g = torch.Generator().manual_seed(seed)
    batch = 64
    model.train()
    t0 = time.monotonic()
    steps_done = 0
    loss_val = float("nan")
    for step in range(max_steps):
        idx = torch.randint(0, ids.shape[0], (batch,), generator=g)
        width = int(mask[idx].sum(1).max())  # pad to the batch's longest text, not the corpus's
        logits = model(input_ids=ids[idx, :width], attention_mask=mask[idx, :width]).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[idx, 1:width].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        steps_done = step + 1
        loss_val = float(loss.detach())
        if progress and step % 50 == 0:
            progress(step, total, loss_val)
        elapsed = time.monotonic() - t0
        if steps_done == 20:
            fit_in_time = int(max_seconds / (elapsed / steps_done))
            total = max(warmup + 1, min_steps, min(max_steps, fit_in_time))
        if steps_done >= total or (elapsed > max_seconds and steps_done >= min_steps):
            break
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    write_replay(pairs, out / "replay.jsonl", REPLAY_SIZE)
    stamp.write_text(
        json.dumps(
            {
                "params": params,
                "steps": steps_done,
                "final_loss": loss_val,
                "seconds": round(time.monotonic() - t0, 1),
            },
            indent=2,
        )
    )
    return out


def general_text(n: int, seed: int) -> list[str]:
    """Plain sentences (questions and answers, no Q/A format) drawn from every topic, billing
    included. They give the model the words a pretrained LM would know, without the billing
    question -> answer mapping: without them the new topic's words keep random embeddings that
    a LoRA adapter (which leaves embeddings frozen) cannot make the model emit."""
    rng = random.Random(seed + 2)
    lines = []
    for _ in range(n):
        topic = rng.choice(list(world.INTENTS))
        intent = rng.choice(list(world.INTENTS[topic]))
        lines.append(world.make_question(rng, topic, intent) if rng.random() < 0.5 else world.answer_for(topic, intent))
    return lines


def write_replay(pairs: list[tuple[str, str]], path: Path, n: int) -> int:
    """Write the first `n` distinct (question, answer) pairs as JSONL replay rows with a stable
    content-hash id; returns how many were written."""
    rows, seen = [], set()
    for q, a in pairs:
        if (q, a) in seen:
            continue
        seen.add((q, a))
        rid = "base-" + hashlib.sha256(f"{q}\x1f{a}".encode()).hexdigest()[:12]
        rows.append(json.dumps({"id": rid, "prompt": q, "completion": a}))
        if len(rows) == n:
            break
    path.write_text("\n".join(rows) + "\n")
    return len(rows)
