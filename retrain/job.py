"""The fine-tuning job's entry point: one spec file in, one result folder out.
The same `main` serves the command line, the Prefect flow and a bare GPU worker.

    $ python -m retrain.job runs/r1.spec.json
    runs/r1

Exit codes: 0 done (the result folder is printed on stdout); 2 bad input (the
spec, its data file, an objective the data cannot feed such as "dpo: 0 pairs
in the training data", a pair whose chosen and rejected are identical, an
output_dir that already exists, or a checkpoint left by a different spec),
with a one-line message on stderr; 1 training failed
(out of memory, diverged, crashed), and no result folder was left behind.
With `checkpoint_every` set, a killed job rerun with the same spec file
resumes from `<output_dir>.checkpoint/`. Several GPUs: `torchrun --nproc_per_node N
-m retrain.job SPEC.json` (data parallel, see retrain/distributed.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from retrain.spec import RetrainSpec


def make_parser() -> argparse.ArgumentParser:
    """The job's argument parser: a spec path and an option to silence progress lines."""
    p = argparse.ArgumentParser(
        prog="python -m retrain.job", description="Run one fine-tuning job from a RetrainSpec JSON file."
    )
    p.add_argument("spec", help="path of the RetrainSpec JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the job described by the spec file named in `argv`; print the result folder and
    return 0, or print one line saying what went wrong and return 2 (bad input) or 1 (failed)."""
    args = make_parser().parse_args(argv)
    try:
        spec = RetrainSpec.from_json(args.spec)
    except ValueError as e:
        print(f"bad spec {args.spec}: {e}", file=sys.stderr)
        return 2
    # Imported late: reading a bad spec should fail fast, before torch loads.
    import torch
    from transformers.utils import logging as hf_logging

    from retrain.checkpoint import CheckpointError
    from retrain.trainer import DataError, train

    hf_logging.disable_progress_bar()  # job logs keep one line per event, no redraw bars
    # Library deprecation notices (peft calling transformers) are nothing the job's user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")

    def progress(step: int, total: int, loss: float) -> None:
        if step == 1 or step == total or step % max(1, total // 20) == 0:
            print(f"step {step}/{total} loss {loss:.4f}", file=sys.stderr, flush=True)

    try:
        result = train(spec, progress=None if args.quiet else progress)
    except (DataError, FileExistsError, CheckpointError) as e:
        print(f"bad input: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # any crash is a failed run, reported on one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if _is_oom(e, torch):
            print(
                f"training failed: out of memory ({first}); lower batch_size or max_length, or use qlora",
                file=sys.stderr,
            )
        else:
            print(f"training failed: {type(e).__name__}: {first}", file=sys.stderr)
        return 1
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
        print(result.output_dir)
    return 0


def _is_oom(e: BaseException, torch) -> bool:
    # CUDA raises OutOfMemoryError; the CPU allocator raises RuntimeError with this text.
    text = str(e).lower()
    return isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


if __name__ == "__main__":
    sys.exit(main())
