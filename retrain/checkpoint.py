"""Training checkpoints, so that an interrupted job resumes where it stopped.

Every `spec.checkpoint_every` steps the loop writes `<output_dir>.checkpoint/`:
the trainable weights (the LoRA adapters, or every weight for full
fine-tuning), the optimizer and scheduler state, the RNG states, the step
and the loss curve so far (for DPO, KTO and SFT + DPO also the reference
log-probs, taken once before the first update: recomputed from trained
weights they would differ), and the spec it belongs to. The file is replaced
atomically, so a kill mid-write leaves the previous checkpoint. Running the
same spec again finds it and continues from that step; a checkpoint written
for a different spec is refused, never silently mixed in. The folder is
deleted once the result folder is complete.

    >>> ckpt = Checkpoint.for_spec(spec)      # None when checkpoint_every is 0
    >>> state = ckpt.load(model, opt, sched)  # {} on a fresh start, else step, curve, tokens (, reference)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from retrain.spec import RetrainSpec


class CheckpointError(ValueError):
    """A checkpoint exists but cannot be used for this spec."""


class Checkpoint:
    """The checkpoint folder of one job (`<output_dir>.checkpoint`)."""

    def __init__(self, spec: RetrainSpec):
        self.spec = spec
        self.dir = Path(str(spec.output_dir).rstrip("/") + ".checkpoint")
        self.file = self.dir / "state.pt"

    @classmethod
    def for_spec(cls, spec: RetrainSpec) -> Checkpoint | None:
        """The job's checkpoint, or None when the spec turns checkpoints off."""
        return cls(spec) if spec.checkpoint_every > 0 else None

    def due(self, step: int, total: int) -> bool:
        """Whether to write after optimizer step `step` (never after the last: the result follows)."""
        return step % self.spec.checkpoint_every == 0 and step < total

    def save(self, model, opt, sched, state: dict[str, Any], masters: list[torch.Tensor] | None = None) -> None:
        """Write the trainable weights (and their fp32 `masters`, bf16-pure), optimizer,
        scheduler, RNG states and `state` atomically."""
        self.dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.dir / "spec.json"
        if not spec_file.exists():
            self.spec.to_json(spec_file)
        blob = {
            "weights": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "state": state,
        }
        if masters is not None:
            blob["masters"] = [m.detach().cpu() for m in masters]
        tmp = self.dir / f".state.pt.tmp-{os.getpid()}"
        torch.save(blob, tmp)
        os.replace(tmp, self.file)  # atomic: a reader sees the old or the new checkpoint, whole

    def load(self, model, opt, sched, masters: list[torch.Tensor] | None = None) -> dict[str, Any]:
        """Restore a saved checkpoint into `model`, `opt`, `sched` (and `masters`) and return its state
        ({"step", "curve", "tokens", ...}); {} when there is none. Raises CheckpointError if it
        was written for a different spec or does not match the model."""
        if not self.file.is_file():
            return {}
        saved = json.loads((self.dir / "spec.json").read_text()) if (self.dir / "spec.json").is_file() else None
        if saved != json.loads(json.dumps(self.spec.to_dict())):
            raise CheckpointError(f"checkpoint: {self.dir} belongs to a different spec; delete it to start over")
        blob = torch.load(self.file, map_location="cpu", weights_only=True)
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if set(params) != set(blob["weights"]):
            raise CheckpointError(f"checkpoint: {self.dir} does not match the model's trainable weights")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(blob["weights"][n])
            if masters is not None:
                saved = blob.get("masters") or [blob["weights"][n] for n in params]
                for m, w in zip(masters, saved):
                    m.copy_(w)
        opt.load_state_dict(blob["optimizer"])
        sched.load_state_dict(blob["scheduler"])
        torch.set_rng_state(blob["rng_cpu"])
        if blob["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(blob["rng_cuda"])
        return blob["state"]

    def remove(self) -> None:
        """Delete the checkpoint folder (after the result folder is complete)."""
        shutil.rmtree(self.dir, ignore_errors=True)
