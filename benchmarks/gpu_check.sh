#!/usr/bin/env bash
# Every GPU check in one run, for a lent H100/H200 (see README "Benchmarks"), at most ~4 minutes:
# benchmarks/finetune_gpu.py against the naive baseline first (the numbers matter most), then
# the CUDA tests of the training core.
#   BASELINE=.gpu/gpu_lora_baseline.py OUT=/tmp/out bash benchmarks/gpu_check.sh
# The GPU image has torch, transformers, peft and pytest but not the orchestrator stack;
# these checks need nothing more (the training core imports no pydantic, MLflow or Prefect).
# Benchmark order: both baselines, then each mode's expected-fastest variant (lora+compile,
# full+pure+compile), then the others while the budget lasts (no run starts after BUDGET_S
# seconds of the benchmark; each run prints its JSON line when done, the summary comes last).
set -uo pipefail
OUT=${OUT:-/tmp/driftloop-gpu}; mkdir -p "$OUT"
BASELINE=${BASELINE:-../shared/bench/gpu_lora_baseline.py}
VARIANTS=${VARIANTS:-lora+compile,full+pure+compile,lora,full+pure,full+compile,lora+pure+compile}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi -L | tee "$OUT/device.txt"
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/device.txt"
timeout "${FINETUNE_TIMEOUT:-185}" python3 benchmarks/finetune_gpu.py --baseline "$BASELINE" --variants "$VARIANTS" \
  --budget-s "${BUDGET_S:-130}" --out "$OUT/finetune.json" 2>&1 | tee "$OUT/finetune.log"
timeout "${PYTEST_TIMEOUT:-50}" python3 -m pytest -q -p no:cacheprovider tests/test_retrain.py tests/test_retrain_speed.py \
  -k "gpu or orchestrator" 2>&1 | tee "$OUT/pytest.log"
