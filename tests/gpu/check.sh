#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: quantize smollm2 to GPTQ/AWQ (and FP8 when available) on CUDA,
# load each on the GPU, report tokens/s and memory; then run the tests marked `gpu`.
# Usage: PY=/path/to/python tests/gpu/check.sh [check.py options]   (default: .venv/bin/python, else python3)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PY:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "No NVIDIA GPU here (nvidia-smi finds none); nothing to check." >&2
    exit 2
fi
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'this torch has no CUDA: install a CUDA build')"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PY" -c "from tests.fixtures.models import MODELS_DIR; from engine.demo import is_built, build_smollm2; \
d = MODELS_DIR / 'smollm2'; None if is_built(d) else build_smollm2(d)"
"$PY" tests/gpu/check.py "$@"
"$PY" -m pytest -q -m gpu -p no:cacheprovider tests/engine
