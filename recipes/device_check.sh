#!/usr/bin/env bash
# The device check for a short GPU slot (one GPU, no hub, no weights; `python -m vtr_bench.device_check --help`):
# engine checks and the efficiency benchmark on random decoders of the real LLaVA-1.5-7B / InternVL2-8B shapes in
# bfloat16, SDPA and (if flash-attn imports) FlashAttention-2, batch 1 and 8 -> benchmarks/results/gpu/
# (small shapes: benchmarks/results/device_check_small/).
# Budgeted to a few minutes on an H100/H200; off a GPU it runs small shapes (tests/test_device_check.py).
#
#   recipes/device_check.sh [--out DIR] [--small] [--reps N] [--models llava15_7b internvl2]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" -m vtr_bench.device_check "$@"
