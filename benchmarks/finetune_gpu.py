"""GPU fine-tuning speed: driftloop's trainer against the naive plain-PEFT baseline, side by side.

Both sides train the same Qwen2-0.5B-shaped random-init model on fully packed batches
(8 x 2048 random tokens, loss on every token) in one process, for LoRA and full fine-tuning.
The baseline is `../shared/bench/gpu_lora_baseline.py`, imported as it is (its model config,
batch, sequence length, step counts and MFU formula are the ones used here); driftloop's side
runs `retrain.trainer.fit` exactly as a job does: packed batches, the chunked cross-entropy,
fused AdamW, bf16. Goals (issue 7): LoRA >= 2.9x and full >= 1.5x the naive tokens/s, each
with peak memory no higher than the baseline's.

    python benchmarks/finetune_gpu.py                       # H100/H200: JSON lines + summary
    python benchmarks/finetune_gpu.py --variants lora+compile,full+pure+compile --out results.json
    python benchmarks/finetune_gpu.py --smoke               # seconds on a CPU (tests run this)
    python benchmarks/finetune_gpu.py --objectives dpo,kto  # DPO/KTO against TRL (finetune_preference.py)

The baselines of the modes run first, then driftloop's variants in the order given. A variant
is `MODE[+pure][+compile]`: MODE is lora or full; `+pure` is `precision: bf16-pure` (bf16
weights, fp32 masters in the optimizer) instead of bf16 autocast with fp32 trainable weights;
`+compile` is `compile: true` (torch.compile of the backbone and of the loss's softmax, causal
SDPA kept on the flash kernel). Driftloop's side times STEPS steps after WARMUP warm-up steps
(a first `fit` call that compiles), from a synchronised start to `fit`'s final synchronise.
Each run prints one JSON line; a run that fails prints its error and the next one goes on; a
run that would start after `--budget-s` is skipped. The last line is a summary with the
ratios of each mode's fastest driftloop variant to the baseline.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from retrain.spec import RetrainSpec  # noqa: E402
from retrain.trainer import Encoded, fit, prepare_model  # noqa: E402

DEFAULT_BASELINE = ROOT.parent / "shared" / "bench" / "gpu_lora_baseline.py"
QWEN2_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # = all-linear
# The GPU run's order: each mode's expected-fastest variant first (the budget may cut the tail).
DEFAULT_VARIANTS = ("lora+compile", "full+pure+compile", "lora", "full+pure", "full+compile", "lora+pure+compile")
SMOKE_VARIANTS = ("lora", "full", "lora+pure", "full+pure")


def load_baseline(path: Path, smoke: bool, steps: int | None):
    """Import the baseline script as a module (it reads its settings from the environment)."""
    if not path.is_file():
        raise SystemExit(f"--baseline: no baseline script at {path}")
    os.environ["TINY"] = "1" if smoke else "0"
    if steps:
        os.environ["STEPS"] = str(steps)
    spec = importlib.util.spec_from_file_location("gpu_lora_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_driftloop(base, variant: str) -> dict:
    """Time `retrain.trainer.fit` on the baseline's model shape and batches: WARMUP steps in a
    first fit (compiles), then STEPS timed steps in a second fit on the same model; same MFU
    formula, peak memory measured the same way (reset after the warmup)."""
    from transformers import Qwen2ForCausalLM

    mode, *flags = variant.split("+")
    device = torch.device(base.DEVICE)
    cfg = copy.deepcopy(base.CFG)  # the trainer sets use_cache=False; the baseline's config stays as it is
    torch.manual_seed(0)
    with device:  # initialise on the GPU: seconds, where the CPU takes tens of seconds
        model = Qwen2ForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    bf16 = device.type == "cuda"
    pure = "pure" in flags
    # LoRA: frozen base in bf16, adapters fp32 (autocast) or bf16 (pure). Full: fp32 trainable
    # weights under bf16 autocast, or bf16 weights with fp32 masters (pure).
    model = model.to(dtype=torch.bfloat16 if pure or (bf16 and mode == "lora") else torch.float32)
    precision = "bf16-pure" if pure else ("bf16" if bf16 else "fp32")

    def spec(steps: int) -> RetrainSpec:
        return RetrainSpec(
            base_model="(in memory)",
            data_path="(random tokens)",
            output_dir="(none)",
            method=mode,
            target_modules=QWEN2_LINEAR,
            lora_r=16,
            lora_alpha=32,
            learning_rate=1e-4,
            batch_size=base.B,
            max_length=base.T,
            max_steps=steps,
            epochs=1.0,
            warmup_ratio=0.0,
            device=device.type,
            precision=precision,
            compile="compile" in flags,
            packing=True,
            attn_implementation=cfg._attn_implementation or "sdpa",
        )

    model = prepare_model(model, spec(base.WARMUP))
    gen = torch.Generator().manual_seed(0)
    # Fully packed like the baseline: every example fills a row; every token is trained (labels = ids).
    encoded = []
    for _ in range(base.B * max(base.WARMUP, base.STEPS)):
        ids = torch.randint(0, cfg.vocab_size, (base.T,), generator=gen).tolist()
        encoded.append(Encoded({}, ids, ids))
    fit(model, encoded, spec(base.WARMUP), device, pad_id=0)  # ends synchronised
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    m = fit(model, encoded, spec(base.STEPS), device, pad_id=0)
    seconds = time.perf_counter() - start
    tokens_per_s = base.B * base.T * base.STEPS / seconds
    k = 6 if mode == "full" else 4
    flops_per_token = k * n_params + 6 * cfg.num_hidden_layers * base.T * cfg.hidden_size
    result = dict(
        side="driftloop",
        mode=variant,
        params_m=round(n_params / 1e6, 1),
        batch=base.B,
        seq=base.T,
        tokens_per_s=round(tokens_per_s),
        mfu=round(tokens_per_s * flops_per_token / base.PEAK_BF16, 3),
        peak_mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 1) if device.type == "cuda" else None,
        loss=round(m["final_loss"], 3),
        padding_fraction=m["padding_fraction"],
        precision=m["precision"],
        device=torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
    )
    print(json.dumps(result), flush=True)
    del model
    _free()
    return result


def run_baseline(base, mode: str) -> dict:
    """The naive baseline's own `run(mode)` (it prints its JSON line itself)."""
    result = {"side": "baseline", **base.run(mode)}
    _free()
    return result


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def summarise(results: list[dict], modes: list[str]) -> dict:
    """Per mode: the baseline, driftloop's fastest variant, their tokens/s and memory ratios, and
    whether the issue's goals (LoRA 2.9x, full 1.5x, memory <= baseline) are met."""
    goals = {"lora": 2.9, "full": 1.5}
    out = {}
    for mode in modes:
        naive = next((r for r in results if r["side"] == "baseline" and r["mode"] == mode), None)
        ours = [
            r for r in results if r["side"] == "driftloop" and r["mode"].split("+")[0] == mode and "tokens_per_s" in r
        ]
        if naive is None or not ours:
            continue
        best = max(ours, key=lambda r: r["tokens_per_s"])
        speedup = round(best["tokens_per_s"] / naive["tokens_per_s"], 2)
        mem = (
            round(best["peak_mem_gib"] / naive["peak_mem_gib"], 2)
            if best["peak_mem_gib"] and naive["peak_mem_gib"]
            else None
        )
        out[mode] = {
            "baseline_tokens_per_s": naive["tokens_per_s"],
            "driftloop_tokens_per_s": best["tokens_per_s"],
            "driftloop_variant": best["mode"],
            "speedup": speedup,
            "goal_speedup": goals[mode],
            "memory_ratio": mem,
            "driftloop_mfu": best["mfu"],
            "baseline_mfu": naive["mfu"],
            "goal_met": speedup >= goals[mode] and (mem is None or mem <= 1.0),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="path of gpu_lora_baseline.py")
    p.add_argument("--modes", default="lora,full", help="comma-separated: lora, full (baselines, and a filter)")
    p.add_argument(
        "--variants",
        default=None,
        help=f"driftloop runs in order, MODE[+pure][+compile] (default {','.join(DEFAULT_VARIANTS)})",
    )
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (default: the baseline's)")
    p.add_argument("--budget-s", type=float, default=450.0, help="skip runs that would start after this")
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU, no compile: a seconds-long check")
    p.add_argument("--out", type=Path, default=None, help="also write all results as JSON here")
    p.add_argument(
        "--objectives",
        default=None,
        help="comma-separated dpo, kto: time the preference objectives against TRL's DPOTrainer/KTOTrainer "
        "instead (benchmarks/finetune_preference.py)",
    )
    args = p.parse_args(argv)
    if args.objectives:
        from finetune_preference import run_objectives

        run_objectives([o for o in args.objectives.split(",") if o], args.smoke, args.steps, args.out)
        return 0
    t0 = time.monotonic()
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast (none on the hot path)
    base = load_baseline(args.baseline, args.smoke, args.steps)
    modes = [m for m in args.modes.split(",") if m]
    variants = args.variants.split(",") if args.variants else list(SMOKE_VARIANTS if args.smoke else DEFAULT_VARIANTS)
    for v in variants:
        mode, *flags = v.split("+")
        if mode not in ("lora", "full") or not set(flags) <= {"pure", "compile"}:
            raise SystemExit(f"--variants: {v!r} is not MODE[+pure][+compile] with MODE lora or full")
    variants = [v for v in variants if v.split("+")[0] in modes]
    if args.smoke:
        variants = [v for v in variants if "compile" not in v]  # compiling on a CPU takes minutes
    results = [run_baseline(base, mode) for mode in modes]
    _write(args.out, results, modes, t0)
    for v in variants:
        error = None
        if time.monotonic() - t0 > args.budget_s:
            error = {"skipped": "time budget"}
        else:
            try:
                results.append(run_driftloop(base, v))  # prints its own JSON line
            except Exception as e:  # one broken variant must not cost the others their run
                error = {"error": f"{type(e).__name__}: {e}"[:500]}
        if error is not None:
            # Outside the except block: the traceback (and the model it holds) is gone before freeing.
            results.append({"side": "driftloop", "mode": v, **error})
            print(json.dumps(results[-1]), flush=True)
            _free()
        _write(args.out, results, modes, t0)  # after every run: a killed benchmark keeps what it measured
    print(json.dumps(_write(args.out, results, modes, t0)), flush=True)
    return 0


def _write(out: Path | None, results: list[dict], modes: list[str], t0: float) -> dict:
    summary = {
        "summary": summarise(results, modes),
        "wall_s": round(time.monotonic() - t0, 1),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    if out:
        out.write_text(json.dumps({"results": results, **summary}, indent=1) + "\n")
    return summary


if __name__ == "__main__":
    sys.exit(main())
