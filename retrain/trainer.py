"""Fine-tuning of a causal LM from feedback: SFT on corrections (prompt,
completion), DPO on preference pairs, KTO on single thumbs up or down, or SFT +
DPO (`spec.objective`; the rows are described in retrain/data.py, the
preference losses in retrain/objectives.py); LoRA, QLoRA or full, in a plain
torch loop. Imports only the standard library, torch,
transformers and peft, so it runs on a bare GPU worker. Speed: packed batches
(retrain/packing.py), a chunked cross-entropy (retrain/loss.py), bf16 autocast
(or `bf16-pure`: bf16 weights, fp32 masters in the optimizer) and fused AdamW
on CUDA, optional torch.compile of the backbone and the loss, causal SDPA that
keeps the flash kernel under compile (retrain/attention.py), and no per-step
host sync on CUDA (the loss of step s is read while step s+1 runs);
resilience: checkpoints and resume (retrain/checkpoint.py).

The loss covers the completion only: the tokens of the prompt template get
label -100. The result folder is written atomically (built beside
`output_dir`, renamed at the end), so a crashed job leaves nothing behind.

    >>> spec = RetrainSpec(base_model="models/demo", data_path="train.jsonl", output_dir="runs/r1")
    >>> result = train(spec, progress=lambda step, total, loss: print(step, total, loss))
    >>> result.model_dir          # full model (LoRA merged into a copy of the base) + tokenizer
    'runs/r1/model'

Result folder: `adapter/` (LoRA, QLoRA), `model/`, `metrics.json` (with the
objective, the trained units per kind and, for pairs, the reward margin and
accuracy of chosen over rejected), `manifest.json` (sorted sha256 of each
trained row, retrain/data.py `row_hash`, and the ids) and `spec.json`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from retrain import distributed
from retrain.attention import use_causal_sdpa
from retrain.checkpoint import Checkpoint

# The data rows live in retrain/data.py, re-exported: `from retrain.trainer import Encoded` still works.
from retrain.data import DataError, Encoded, encode_example, load_examples, row_hash, rows_digest
from retrain.loss import causal_lm_loss, decoder_backbone
from retrain.objectives import Objective, scorer, without_dropout
from retrain.packing import collate_packed, collate_padded
from retrain.precision import MasterWeights, lora_input_cast
from retrain.preference import USES, Unit, build_units, count_kinds, count_units, resolve_objective
from retrain.spec import RetrainSpec

__all__ = [
    "DataError",
    "Encoded",
    "Progress",
    "TrainResult",
    "encode_example",
    "fit",
    "load_examples",
    "load_model",
    "prepare_model",
    "resolve_device",
    "resolve_precision",
    "train",
]

Progress = Callable[[int, int, float], None]


@dataclass
class TrainResult:
    """Where one job put its outputs, and what it measured."""

    output_dir: str
    model_dir: str  # full model folder: AutoModelForCausalLM, AutoTokenizer, lm-eval's hf backend
    adapter_dir: str | None  # the PEFT adapter alone (None for full fine-tuning)
    metrics: dict[str, Any]


def resolve_device(name: str) -> torch.device:
    """The torch device for a spec's `device`: auto picks CUDA when a GPU is visible, else CPU;
    cuda without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda requested but no CUDA GPU is visible")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def resolve_precision(spec: RetrainSpec, device: torch.device) -> str:
    """ "bf16" (bf16 autocast, fp32 trainable weights), "bf16-pure" (bf16 weights, fp32 master
    copies in the optimizer) or "fp32" for a spec's `precision`: auto picks bf16 on a GPU that
    supports it; bf16 on a CPU is refused (slow there); bf16-pure runs anywhere but on a GPU
    without bf16."""
    bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if spec.precision == "bf16" and not bf16_ok:
        raise RuntimeError(f"precision: bf16 needs a CUDA GPU with bf16 support, device is {device}")
    if spec.precision == "bf16-pure":
        if device.type == "cuda" and not bf16_ok:
            raise RuntimeError(f"precision: bf16-pure needs bf16, which {torch.cuda.get_device_name(device)} lacks")
        return "bf16-pure"
    return "bf16" if spec.precision == "bf16" or (spec.precision == "auto" and bf16_ok) else "fp32"


def load_model(spec: RetrainSpec, device: torch.device):
    """The model to train: the base with LoRA adapters (only they are trainable), the 4-bit base
    with adapters (QLoRA), or the whole base (full). Returns (model, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.base_model)
    attn = {"attn_implementation": spec.attn_implementation}
    if spec.method == "qlora":
        _check_qlora(device)
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            spec.base_model, quantization_config=quant, device_map={"": device.index or 0}, **attn
        )
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        # A frozen LoRA base can live in bf16 (half the memory, no optimizer state); weights that
        # train stay fp32 masters under bf16 autocast, or (bf16-pure) fp32 copies in the optimizer.
        precision = resolve_precision(spec, device)
        bf16_base = precision == "bf16-pure" or (precision == "bf16" and spec.method == "lora")
        model = AutoModelForCausalLM.from_pretrained(
            spec.base_model, dtype=torch.bfloat16 if bf16_base else torch.float32, **attn
        ).to(device)
    return prepare_model(model, spec), tokenizer


def prepare_model(model, spec: RetrainSpec):
    """Make `model` trainable as the spec's method says: every weight (full), or LoRA adapters
    (rank, alpha, dropout, target modules from the spec) on a frozen base."""
    model.config.use_cache = False  # training: a KV cache would also hide the packed-sequence boundaries
    if spec.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    # GPT-2 stores its projections as Conv1D, weight shaped (in, out): peft must transpose.
    conv1d = any(
        isinstance(m, Conv1D) and name.rsplit(".", 1)[-1] in spec.target_modules for name, m in model.named_modules()
    )
    cfg = LoraConfig(
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=list(spec.target_modules),
        task_type="CAUSAL_LM",
        fan_in_fan_out=conv1d,
    )
    torch.manual_seed(spec.seed)  # LoRA's A matrices are drawn at random
    return get_peft_model(model, cfg)


def fit(
    model,
    encoded: list[Unit],
    spec: RetrainSpec,
    device: torch.device,
    pad_id: int,
    progress: Progress | None = None,
    objective: Objective | None = None,
) -> dict[str, Any]:
    """Train `model` in place on `encoded` (SFT examples; with a preference `objective`, its
    units: pairs, rated examples, SFT examples): AdamW (fused on CUDA) on the trainable parameters
    (or on their fp32 masters, bf16-pure), linear warmup then linear decay to zero, gradient
    clipping, a seeded order per epoch; packed batches, chunked loss, bf16 and torch.compile as
    the spec says. With `checkpoint_every`, saves a checkpoint every N steps and resumes from one
    left by an earlier run of the same spec. `progress(step, total, loss)` follows each step (on
    CUDA one step late: the loss is read without stalling the GPU). With an `objective`, its
    reference log-probs are computed before the first step (or restored with the checkpoint),
    dropout is off and packing too. Returns the loop's metrics (with an objective, also its
    rewards on the training data); a non-finite loss raises FloatingPointError."""
    precision = resolve_precision(spec, device)
    params = [p for p in model.parameters() if p.requires_grad]
    masters = MasterWeights(params) if precision == "bf16-pure" else None
    opt_params = masters.masters if masters else params
    opt = torch.optim.AdamW(
        opt_params, lr=spec.learning_rate, weight_decay=spec.weight_decay, fused=device.type == "cuda"
    )
    per_epoch = math.ceil(len(encoded) / spec.batch_size)
    total = max(1, math.ceil(spec.epochs * per_epoch))
    if spec.max_steps is not None:
        total = min(total, spec.max_steps)
    warmup = int(spec.warmup_ratio * total)
    # lr factor of update s (0-based): ramps 1/w .. 1, then falls to 1/(total - w) on the last step.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else (total - s) / max(1, total - warmup)
    )
    rank, world = distributed.rank(), distributed.world_size()
    ckpt = Checkpoint.for_spec(spec)
    state = ckpt.load(model, opt, sched, masters.masters if masters else None) if ckpt else {}
    step = resumed = int(state.get("step", 0))
    curve, tokens_before = list(state.get("curve", [])), int(state.get("tokens", 0))
    packing = objective is None and (spec.packing if spec.packing is not None else device.type == "cuda")
    backbone = decoder_backbone(model) if spec.chunked_loss else None
    if spec.compile:
        backbone = _compiled(backbone if backbone is not None else model)
    score = scorer(model, spec, backbone)  # summed completion log-prob per row (preference objectives)
    if objective is not None:  # reference log-probs: before the first update, or the checkpoint's
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            objective.start(model, score, pad_id, device, saved=state.get("reference"))
    stride = max(1, total // 1000)  # keep the loss curve at <= ~1000 points
    lag = 1 if device.type == "cuda" else 0  # steps whose loss may still be in flight
    pending: list[tuple[int, torch.Tensor, Any]] = []
    last = {"loss": float("nan")}

    def drain(keep: int) -> None:
        # Read the losses of finished steps (all but the newest `keep`): check, record, report.
        while len(pending) > keep:
            at, value, ready = pending.pop(0)
            if ready is not None:
                ready.synchronize()  # the copy was queued right after that step's forward: long done
            loss_val = last["loss"] = float(value)
            if not math.isfinite(loss_val):
                raise FloatingPointError(
                    f"loss is {loss_val} at step {at}: training diverged (learning_rate {spec.learning_rate} too high?)"
                )
            if at % stride == 0 or at == total:
                curve.append([at, round(loss_val, 5)])
            if progress is not None and rank == 0:
                progress(at, total, loss_val)

    tokens = slots = 0
    model.train()
    t0 = time.monotonic()
    with (
        use_causal_sdpa(model) as declare_plain,
        lora_input_cast(model, enabled=precision != "bf16"),
        without_dropout(model) if objective is not None else contextlib.nullcontext(),
    ):
        while step < total:
            epoch, first = divmod(step, per_epoch)
            order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(spec.seed * 100_003 + epoch))
            for b in range(first, per_epoch):
                step_rows = [encoded[j] for j in order[b * spec.batch_size : (b + 1) * spec.batch_size].tolist()]
                rows = step_rows[rank::world] or step_rows[:1]  # this process's share (none: a stand-in, weight 0)
                if objective is None:
                    # Under torch.compile a new row width means a recompile: packed rows get one width.
                    batch = (
                        collate_packed(rows, spec.max_length, pad_id, device, static_width=spec.compile)
                        if packing
                        else collate_padded(rows, pad_id, device)
                    )
                    declare_plain(batch.position_ids is None and batch.attention_mask is None)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                        if spec.chunked_loss:
                            loss = causal_lm_loss(
                                model,
                                batch.input_ids,
                                batch.labels,
                                batch.attention_mask,
                                batch.position_ids,
                                chunk_tokens=spec.loss_chunk_tokens,
                                backbone=backbone,
                                compiled_loss=spec.compile,
                            )
                        else:
                            loss = causal_lm_loss(
                                model if backbone is None else backbone,
                                batch.input_ids,
                                batch.labels,
                                batch.attention_mask,
                                batch.position_ids,
                                chunked=False,
                            )
                    if world > 1:
                        # Weight each process's mean by its share of the step's target tokens, so that the
                        # summed gradients are those of the mean over the whole step.
                        mine = (batch.labels[:, 1:] != -100).sum().float() * (rank < len(step_rows))
                        loss = loss * (mine / distributed.sum_(mine).clamp(min=1))
                    batch_tokens, batch_slots = batch.tokens, batch.slots
                else:
                    declare_plain(False)  # padded rows with an attention mask
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                        # Normalised by the step's global counts: the summed gradients are the whole step's.
                        loss, batch_tokens, batch_slots = objective.loss(
                            rows,
                            score,
                            pad_id,
                            device,
                            real=rank < len(step_rows),
                            total=distributed.sum_ if world > 1 else _identity,
                        )
                reported = distributed.sum_(loss.detach()) if world > 1 else loss.detach()
                pending.append((step + 1, *_start_read(reported)))
                loss.backward()
                if masters:
                    masters.pull_grads()
                distributed.sum_grads(opt_params)
                torch.nn.utils.clip_grad_norm_(opt_params, spec.max_grad_norm)
                opt.step()
                if masters:
                    masters.push()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                if rank < len(step_rows):  # a stand-in row trains nothing and counts nothing
                    tokens += batch_tokens  # prompt + completion tokens, padding excluded
                    slots += batch_slots
                due = bool(ckpt and ckpt.due(step, total) and rank == 0)
                drain(0 if due or step >= total else lag)
                if due:
                    saved = {"step": step, "curve": curve, "tokens": tokens_before + tokens}
                    if objective is not None:
                        saved["reference"] = objective.reference  # a resumed job scores against the same numbers
                    ckpt.save(model, opt, sched, saved, masters.masters if masters else None)
                if step >= total:
                    break
        drain(0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.monotonic() - t0
    if masters:
        masters.release()  # the model keeps the fp32 masters: what is saved is what trained
    tokens, slots = (int(v) for v in distributed.sum_(torch.tensor([tokens, slots], device=device)).tolist())
    model.eval()
    loop = {
        "steps": step,
        "resumed_from_step": resumed,
        "loss_curve": curve,
        "final_loss": last["loss"],
        "train_seconds": round(seconds, 3),
        "tokens": tokens_before + tokens,
        "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
        "padding_fraction": round(1 - tokens / max(slots, 1), 4),
        "precision": precision,
        "packing": packing,
        "chunked_loss": spec.chunked_loss,
        "compile": spec.compile,
    }
    if objective is not None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loop.update(objective.evaluate(model, score, pad_id, device))
    return loop


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _compiled(module):
    # One compiled wrapper per module, so a second fit() on the same model reuses its graphs. Kept
    # in the module's __dict__ (not registered as a submodule: no state_dict entry); the cycle
    # module <-> wrapper goes with the module.
    if "_driftloop_compiled" not in vars(module):
        object.__setattr__(module, "_driftloop_compiled", torch.compile(module))
    return vars(module)["_driftloop_compiled"]


def _start_read(value: torch.Tensor) -> tuple[torch.Tensor, Any]:
    # On CUDA, queue the loss's copy to the host now and mark it with an event: reading it later
    # waits for that copy only, not for everything queued after it (as .item() would).
    if value.device.type != "cuda":
        return value, None
    host = value.to("cpu", non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return host, ready


def train(spec: RetrainSpec, progress: Progress | None = None) -> TrainResult:
    """Run one fine-tuning job and return where its outputs are. The result folder appears at
    `spec.output_dir` only when everything succeeded; an existing `output_dir` is never
    overwritten (FileExistsError), bad data raises DataError, QLoRA without bitsandbytes and CUDA
    raises RuntimeError."""
    spec.validate(check_paths=True)
    out = Path(spec.output_dir)
    if out.exists():
        raise FileExistsError(f"output_dir: {out} already exists; a job never overwrites a result")
    t0 = time.monotonic()
    rank, _, device = distributed.setup(resolve_device(spec.device))  # torchrun: one process per GPU
    if spec.method == "qlora":
        _check_qlora(device)
    random.seed(spec.seed)
    torch.manual_seed(spec.seed)
    rows = load_examples(spec.data_path)
    if spec.data_digest is not None and rows_digest(rows) != spec.data_digest:
        raise DataError(f"{spec.data_path}: rows do not match the spec's data_digest (changed since curation?)")
    name = resolve_objective(spec.objective, rows)  # before loading the model: bad data fails fast
    model, tokenizer = load_model(spec, device)
    kept, dropped = build_units(tokenizer, rows, name, spec)
    if not kept:
        raise DataError(f"{spec.data_path}: every example is longer than max_length={spec.max_length} tokens")
    objective = Objective(name, spec, kept) if name != "sft" else None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    out.parent.mkdir(parents=True, exist_ok=True)
    # Rank 0 alone writes (all ranks hold the same weights); other ranks only train.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent)) if rank == 0 else None
    try:
        loop = fit(model, kept, spec, device, pad_id, progress, objective)
        trained = [e.example for e in kept]
        metrics = {
            "method": spec.method,
            "objective": name,
            "objective_requested": spec.objective,
            "device": str(device),
            "processes": distributed.world_size(),
            "examples": len(kept),
            "dropped_too_long": dropped,
            "counts": count_units(kept),
            "unused_rows": {k: n for k, n in count_kinds(rows).items() if n and k not in USES[name]},
            **loop,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total_params": sum(p.numel() for p in model.parameters()),
            **_peak_memory(device),
            "wall_seconds": round(time.monotonic() - t0, 3),
        }
        if tmp is not None:
            if spec.method == "full":
                model.save_pretrained(tmp / "model")
            else:
                model.save_pretrained(tmp / "adapter")
                tokenizer.save_pretrained(tmp / "adapter")
                _merge(spec.base_model, tmp / "adapter", tmp / "model")
            tokenizer.save_pretrained(tmp / "model")
            manifest = {
                "n": len(trained),
                "objective": name,
                "digest": rows_digest(trained),
                "hashes": sorted(row_hash(e) for e in trained),
                "ids": sorted(e["id"] for e in trained),
            }
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            spec.to_json(tmp / "spec.json")
            os.rename(tmp, out)  # atomic on one filesystem: the result appears whole or not at all
            if Checkpoint.for_spec(spec):
                Checkpoint.for_spec(spec).remove()  # kept until now: a crash while saving could still resume
        distributed.barrier()  # other ranks return once the result folder exists
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        distributed.teardown()
    return TrainResult(
        output_dir=str(out),
        model_dir=str(out / "model"),
        adapter_dir=None if spec.method == "full" else str(out / "adapter"),
        metrics=metrics,
    )


def _check_qlora(device: torch.device) -> None:
    missing = []
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("bitsandbytes is not installed")
    if device.type != "cuda" or not torch.cuda.is_available():
        missing.append("no CUDA GPU is in use")
    if missing:
        raise RuntimeError(
            f"qlora needs bitsandbytes and a CUDA GPU: {'; '.join(missing)} (use method 'lora' on this machine)"
        )


def _merge(base_model: str, adapter_dir: Path, model_dir: Path) -> None:
    """Merge the adapter into a fresh full-precision copy of the base (never the 4-bit or
    in-training copy), so `model/` loads without peft."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(model_dir)


def _peak_memory(device: torch.device) -> dict[str, int]:
    # ru_maxrss is in KiB on Linux: the process's peak resident set, loading included.
    peak = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if device.type == "cuda":
        peak["peak_cuda_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return peak
