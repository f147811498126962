"""The one definition of a fine-tune's hyperparameters, shared by driftloop.yaml and the job spec.

`TrainingParams` is a standard-library dataclass: the `retrain:` section of
driftloop.yaml is built from its fields (`driftloop.core.config.RetrainConfig`), and
`retrain.spec.RetrainSpec`, the job a bare GPU worker reads, is a TrainingParams
plus paths. A new training setting is added here once, with its documentation,
and reaches the YAML, the job spec and the configuration reference.

It lives with the job, not in the core, because a GPU worker has only the
`retrain` package: standard library only, it is the one module of `retrain`
that the configuration imports (the layer contract allows exactly this edge).

    >>> TrainingParams(lora_r=8).check()
    >>> TrainingParams(lora_r=0).check()
    Traceback (most recent call last):
    ...
    ValueError: lora_r: must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

METHODS = ("lora", "qlora", "full")
PRECISIONS = ("auto", "fp32", "bf16", "bf16-pure")
ATTENTION = ("sdpa", "eager", "flash_attention_2", "flex_attention")
OBJECTIVES = ("auto", "sft", "dpo", "kto", "mixed")


def _doc(default: Any, doc: str, **kw: Any) -> Any:
    """A dataclass field with its documentation (rendered into the configuration reference)."""
    if callable(default):
        return field(default_factory=default, metadata={"doc": doc}, **kw)
    return field(default=default, metadata={"doc": doc}, **kw)


@dataclass(kw_only=True)
class TrainingParams:
    """How to fine-tune: method, adapter shape, optimisation and speed settings (no paths)."""

    method: Literal["lora", "qlora", "full"] = _doc(
        "lora", "lora: low-rank adapters; qlora: adapters on a 4-bit base (CUDA, bitsandbytes); full: every weight."
    )
    lora_r: int = _doc(16, "LoRA rank.")
    lora_alpha: int = _doc(32, "LoRA scaling numerator (the update is scaled by alpha / r).")
    lora_dropout: float = _doc(0.0, "Dropout on the LoRA path, in [0, 1).")
    # GPT-2 names: c_attn (qkv), c_proj (attention and MLP output), c_fc (MLP input).
    target_modules: list[str] = _doc(
        lambda: ["c_attn", "c_proj", "c_fc"],
        "Module names that get adapters (the demo model's GPT-2 names by default).",
    )
    # Measured on the demo (150 billing items + 50% replay): lr 5e-3 x 10 epochs reaches 1.0
    # held-out billing accuracy with base topics kept at 1.0; 3e-3 x 6 reached only 0.74.
    learning_rate: float = _doc(5e-3, "Peak learning rate (AdamW).")
    epochs: float = _doc(10.0, "Passes over the curated data; fractional epochs stop mid-pass.")
    batch_size: int = _doc(16, "Examples per optimizer step.")
    max_length: int = _doc(96, "Tokens per example (prompt + completion + eos); longer ones are dropped.")
    seed: int = _doc(0, "Seed of data order, initialisation and dropout.")
    max_steps: int | None = _doc(None, "Optional cap on optimizer steps.")
    warmup_ratio: float = _doc(0.05, "Share of steps with a linear learning-rate warmup, in [0, 1).")
    weight_decay: float = _doc(0.0, "AdamW weight decay.")
    max_grad_norm: float = _doc(1.0, "Gradient clipping norm.")
    # Must match the serving and evaluation format (driftloop.demo.world.format_example for the demo).
    prompt_template: str = _doc(
        "Q: {prompt}\nA:", "The text the model sees before the completion; must contain {prompt}."
    )
    # Speed (tests/test_retrain_speed.py proves each is exact on CPU; benchmarks/finetune_gpu.py times them).
    # Auto packing is off on CPU, where the demo trained 12% slower packed (masked attention over
    # longer rows costs more there than the padding it saves).
    packing: bool | None = _doc(
        None,
        "Pack each step's examples into rows of max_length tokens (no padding between examples; same loss). null: on for CUDA, off on CPU.",
    )
    precision: Literal["auto", "fp32", "bf16", "bf16-pure"] = _doc(
        "auto",
        "auto: bf16 autocast on a GPU that supports it, fp32 elsewhere; bf16-pure: bf16 weights, activations and gradients with fp32 master copies in the optimizer (fastest for full fine-tuning on a GPU).",
    )
    chunked_loss: bool = _doc(
        True, "Cross-entropy over chunks of hidden states, so full fp32 logits are never materialised."
    )
    loss_chunk_tokens: int = _doc(0, "Tokens per loss chunk; 0: about 1 GiB of fp32 logits per chunk.")
    compile: bool = _doc(
        False, "torch.compile the transformer backbone and the loss's per-chunk softmax (pays off on long GPU jobs)."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flex_attention"] = _doc(
        "sdpa", "Attention kernel passed to transformers; flash_attention_2 needs the flash-attn package."
    )
    checkpoint_every: int = _doc(
        0,
        "Write a resumable checkpoint every N optimizer steps (0: never); a rerun of the same job spec resumes from it.",
    )
    # Objectives (retrain/objectives.py; each loss equals TRL's, tests/test_retrain_objectives.py).
    objective: Literal["auto", "sft", "dpo", "kto", "mixed"] = _doc(
        "auto",
        "sft: cross-entropy on corrections (rows with a completion); dpo: sigmoid DPO on pairs (rows with chosen and rejected); kto: KTO on single rated completions (rows with a label); mixed: SFT on the corrections plus DPO on the pairs; auto: chosen from the data (pairs: dpo, or mixed with corrections too; else labelled rows: kto; else sft); the loop's curation resolves it first: at least retrain.min_train_items corrections train SFT as before, else pairs train dpo, else thumbs and ratings kto. dpo, kto and mixed train without dropout and without packing, against the base (LoRA: adapters off; full: log-probs taken once before the first step).",
    )
    beta: float = _doc(
        0.1,
        "dpo, kto, mixed: strength of the pull towards the reference model (DPO's and KTO's beta); higher stays closer to the base.",
    )
    kto_desirable_weight: float = _doc(
        1.0,
        "kto: weight of the loss on thumbs-up completions. Set with kto_undesirable_weight from the up/down balance, so that desirable_weight x n_up / (undesirable_weight x n_down) lies in [1, 4/3] (the KTO paper's range, as TRL recommends; retrain.params.kto_weights gives such a pair).",
    )
    kto_undesirable_weight: float = _doc(
        1.0, "kto: weight of the loss on thumbs-down completions (see kto_desirable_weight)."
    )
    sft_weight: float = _doc(
        1.0,
        "mixed: weight of the SFT loss (mean cross-entropy over the corrections' completion tokens) added to the DPO loss.",
    )

    def check(self) -> None:
        """Raise ValueError naming the first hyperparameter out of range."""
        checks = [
            ("method", self.method in METHODS, f"must be one of {', '.join(METHODS)}"),
            ("lora_r", self.lora_r >= 1, "must be >= 1"),
            ("lora_alpha", self.lora_alpha >= 1, "must be >= 1"),
            ("lora_dropout", 0.0 <= self.lora_dropout < 1.0, "must be in [0, 1)"),
            ("target_modules", bool(self.target_modules) or self.method == "full", "must not be empty"),
            ("learning_rate", self.learning_rate > 0, "must be > 0"),
            ("epochs", self.epochs > 0, "must be > 0"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("max_length", self.max_length >= 2, "must be >= 2"),
            ("max_steps", self.max_steps is None or self.max_steps >= 1, "must be >= 1 or null"),
            ("warmup_ratio", 0.0 <= self.warmup_ratio < 1.0, "must be in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("max_grad_norm", self.max_grad_norm > 0, "must be > 0"),
            ("prompt_template", "{prompt}" in self.prompt_template, "must contain {prompt}"),
            ("precision", self.precision in PRECISIONS, f"must be one of {', '.join(PRECISIONS)}"),
            ("attn_implementation", self.attn_implementation in ATTENTION, f"must be one of {', '.join(ATTENTION)}"),
            ("loss_chunk_tokens", self.loss_chunk_tokens >= 0, "must be >= 0"),
            ("checkpoint_every", self.checkpoint_every >= 0, "must be >= 0"),
            ("objective", self.objective in OBJECTIVES, f"must be one of {', '.join(OBJECTIVES)}"),
            ("beta", self.beta > 0, "must be > 0"),
            ("kto_desirable_weight", self.kto_desirable_weight > 0, "must be > 0"),
            ("kto_undesirable_weight", self.kto_undesirable_weight > 0, "must be > 0"),
            ("sft_weight", self.sft_weight > 0, "must be > 0"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ValueError(f"{name}: {why}, got {getattr(self, name)!r}")


def kto_weights(n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """(kto_desirable_weight, kto_undesirable_weight) for a pool with these counts of thumbs-up
    and thumbs-down completions: the smaller class is weighted up so that both classes weigh
    the same in the loss, desirable_weight * n_desirable == undesirable_weight * n_undesirable,
    the lower end of the KTO paper's range [1, 4/3] (Ethayarajh et al. 2024, eq. 8; TRL's
    KTOTrainer warns outside it). A class with no examples leaves both weights at 1.

        >>> kto_weights(300, 100)
        (1.0, 3.0)
        >>> kto_weights(50, 200)
        (4.0, 1.0)
    """
    if n_desirable <= 0 or n_undesirable <= 0:
        return 1.0, 1.0
    if n_desirable >= n_undesirable:
        return 1.0, n_desirable / n_undesirable
    return n_undesirable / n_desirable, 1.0


def training_fields() -> list[dataclasses.Field]:
    """The fields of TrainingParams, in order (what `driftloop.core.config.RetrainConfig` is built from)."""
    return list(dataclasses.fields(TrainingParams))
