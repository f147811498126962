"""Preference fine-tuning speed: driftloop's DPO and KTO against TRL's DPOTrainer and KTOTrainer.

Both sides train the same random-init model (a Qwen2-0.5B shape on a GPU, a tiny GPT-2 with
`--smoke` on a CPU) with the same LoRA adapters, on the same rows (pairs for DPO; the same pairs
as single thumbs for KTO, TRL's unpairing: chosen desirable, rejected undesirable), batch size,
learning rate, beta and step count, each through its own public entry point: `retrain.trainer.train`
(a job spec) and `Trainer.train()`. Each side's time is the one it reports for its training loop
(driftloop's `train_seconds`, TRL's `train_runtime`); rows/s is batch x steps over that time.
Each run prints one JSON line; the last line is a summary with driftloop's speed-up per objective.

    python benchmarks/finetune_gpu.py --objectives dpo,kto            # a GPU
    python benchmarks/finetune_gpu.py --objectives dpo,kto --smoke    # seconds on a CPU (tests run this)
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retrain.curate import write_jsonl  # noqa: E402
from retrain.spec import RetrainSpec  # noqa: E402
from retrain.trainer import train  # noqa: E402

OBJECTIVES = ("dpo", "kto")
WORDS = "account order refund invoice shipping password billing card parcel return email label".split()


def _model(folder: Path, smoke: bool) -> Path:
    """A random-init model and the demo tokenizer, saved to `folder`."""
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    from driftloop.demo import world
    from retrain.base_model import build_tokenizer

    tok = build_tokenizer(world.tokenizer_corpus(0))
    torch.manual_seed(0)
    if smoke:
        cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=64, n_layer=2, n_head=2)
        GPT2LMHeadModel(cfg).save_pretrained(folder)
    else:  # Qwen2-0.5B's shape, the tokenizer's vocabulary (the embedding's size does not change the speed much)
        cfg = Qwen2Config(
            vocab_size=len(tok),
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
        )
        Qwen2ForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _pairs(n: int, words: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    return [{"id": f"p{i}", "prompt": text(words), "chosen": text(words), "rejected": text(words)} for i in range(n)]


def _rows(objective: str, pairs: list[dict]) -> list[dict]:
    if objective == "dpo":
        return pairs
    return [
        {"id": f"{p['id']}-{s}", "prompt": p["prompt"], "completion": p[s], "label": s == "chosen"}
        for p in pairs
        for s in ("chosen", "rejected")
    ]


def run_driftloop(base: Path, objective: str, rows: list[dict], work: Path, settings: dict) -> dict:
    data = write_jsonl(rows, work / f"{objective}.jsonl")
    res = train(
        RetrainSpec(
            base_model=str(base),
            data_path=str(data),
            output_dir=str(work / f"ours-{objective}"),
            objective=objective,
            target_modules=settings["targets"],
            **{k: v for k, v in settings.items() if k != "targets"},
        )
    )
    m = res.metrics
    return {
        "side": "driftloop",
        "objective": objective,
        "steps": m["steps"],
        "train_seconds": m["train_seconds"],
        "rows_per_s": round(settings["batch_size"] * m["steps"] / m["train_seconds"], 2),
        "final_loss": round(m["final_loss"], 4),
        "peak_mem_gib": round(m.get("peak_memory_bytes", 0) / 2**30, 2) if m.get("peak_memory_bytes") else None,
    }


def run_trl(base: Path, objective: str, rows: list[dict], work: Path, settings: dict) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    head = "Q: {prompt}\nA:"
    key = "chosen" if objective == "dpo" else "completion"
    data = Dataset.from_list(
        [
            {"prompt": head.replace("{prompt}", r["prompt"]), key: " " + r[key]}
            | ({"rejected": " " + r["rejected"]} if objective == "dpo" else {"label": r["label"]})
            for r in rows
        ]
    )
    cuda = settings["device"] == "cuda"
    common = dict(
        output_dir=str(work / f"trl-{objective}"),
        beta=settings["beta"],
        per_device_train_batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
        max_steps=settings["max_steps"],
        max_length=settings["max_length"],
        lr_scheduler_type="linear",
        warmup_steps=0,  # = warmup_ratio 0 on our side
        logging_steps=max(1, settings["max_steps"]),
        save_strategy="no",
        report_to=[],
        use_cpu=not cuda,
        bf16=cuda,
        seed=0,
    )
    lora = LoraConfig(
        r=settings["lora_r"], lora_alpha=settings["lora_alpha"], target_modules=settings["targets"], lora_dropout=0.0
    )
    if objective == "dpo":
        tr = DPOTrainer(
            model=model, args=DPOConfig(**common), train_dataset=data, processing_class=tok, peft_config=lora
        )
    else:
        tr = KTOTrainer(
            model=model, args=KTOConfig(**common), train_dataset=data, processing_class=tok, peft_config=lora
        )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    out = tr.train()
    seconds = float(out.metrics["train_runtime"])
    return {
        "side": "trl",
        "objective": objective,
        "steps": int(out.global_step),
        "train_seconds": round(seconds, 3),
        "rows_per_s": round(settings["batch_size"] * out.global_step / seconds, 2),
        "final_loss": round(float(out.training_loss), 4),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    }


def run_objectives(objectives: list[str], smoke: bool, steps: int | None, out: Path | None) -> dict:
    """Both sides for each objective; prints a JSON line per run and returns the summary."""
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad:
        raise SystemExit(f"--objectives: {bad[0]!r} is not one of {', '.join(OBJECTIVES)}")
    t0 = time.monotonic()
    device = "cpu" if smoke or not torch.cuda.is_available() else "cuda"
    steps = steps or (3 if smoke else 30)
    settings = {
        "method": "lora",
        "lora_r": 8 if smoke else 16,
        "lora_alpha": 16 if smoke else 32,
        "targets": ["c_attn", "c_proj", "c_fc"]
        if smoke
        else ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "batch_size": 4 if smoke else 8,
        "learning_rate": 1e-4,
        "beta": 0.1,
        "max_steps": steps,
        "epochs": 1000.0,  # max_steps ends both sides
        "max_length": 128 if smoke else 1024,
        "warmup_ratio": 0.0,
        "device": device,
        "packing": False,
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="driftloop-pref-bench-") as tmp:
        work = Path(tmp)
        base = _model(work / "base", smoke or device == "cpu")
        pairs = _pairs(settings["batch_size"] * steps, 8 if smoke else 150)
        for objective in objectives:
            rows = _rows(objective, pairs)
            for side in (run_trl, run_driftloop):
                try:
                    r = side(base, objective, rows, work, settings)
                except Exception as e:  # one failing side must not cost the other its run
                    r = {"side": side.__name__[4:], "objective": objective, "error": f"{type(e).__name__}: {e}"[:500]}
                r["device"] = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
                print(json.dumps(r), flush=True)
                results.append(r)
    summary = {}
    for o in objectives:
        ours = next(
            (r for r in results if r["side"] == "driftloop" and r["objective"] == o and "rows_per_s" in r), None
        )
        theirs = next((r for r in results if r["side"] == "trl" and r["objective"] == o and "rows_per_s" in r), None)
        if ours and theirs:
            summary[o] = {
                "driftloop_rows_per_s": ours["rows_per_s"],
                "trl_rows_per_s": theirs["rows_per_s"],
                "speedup": round(ours["rows_per_s"] / theirs["rows_per_s"], 2),
            }
    final = {"summary": summary, "device": device, "steps": steps, "wall_s": round(time.monotonic() - t0, 1)}
    if out:
        out.write_text(json.dumps({"results": results, **final}, indent=1) + "\n")
    print(json.dumps(final), flush=True)
    return final
