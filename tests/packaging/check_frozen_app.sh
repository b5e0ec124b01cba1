#!/usr/bin/env bash
# Build the frozen app and check it from a shell where the project's virtual environment is not
# active (env -i, a minimal PATH, a fresh HOME, a folder outside the checkout). Slow (a build takes
# several minutes), so it is not part of `make test`. Run from the checkout:
#
#   tests/packaging/check_frozen_app.sh             build with packaging/build-app.sh, then check
#   tests/packaging/check_frozen_app.sh --no-build  check the dist/quantdesk/ that is there
#   add --quick to skip the model-stack checks (quantize, chat, eval: a few minutes on two cores)
#
# Checks: `quantdesk --version`; `doctor --json` is JSON and finds the bundled llama.cpp; torch loads
# (`doctor --torch`); `inspect` reads a Hugging Face folder and a GGUF file; `gui --screenshot
# shot.png` under QT_QPA_PLATFORM=offscreen writes a PNG of the window; then, on the test model
# tests/.models/tiny, quantize to Q8_0 and bnb-int8, chat (llama.cpp and transformers) and eval. Prints the
# bundle's size and start-up times.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
build=yes
stack=yes
for arg in "$@"; do
  case "$arg" in
    --no-build) build=no ;;
    --quick) stack=no ;;
    *) echo "check_frozen_app.sh: unknown option '$arg'" >&2; exit 2 ;;
  esac
done
[ "$build" = no ] || packaging/build-app.sh

app="$root/dist/quantdesk/quantdesk"
[ -x "$app" ] || { echo "FAIL: $app is missing; run packaging/build-app.sh" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok:   $*"; }

# Outside the venv: nothing inherited but a minimal PATH and a throw-away HOME.
clean() { (cd "$work" && env -i HOME="$work/home" PATH=/usr/bin:/bin "$@"); }
mkdir -p "$work/home"
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
json_check() {  # json_check FILE PYTHON-EXPRESSION-ON-d: the system Python reads the JSON, not the venv's
  /usr/bin/env -i PATH=/usr/bin:/bin python3 - "$1" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2]) else 1)
PY
}

if out=$(clean "$app" --version) && [[ "$out" == "quantdesk "* ]]; then pass "--version: $out"; else fail "--version printed '$out'"; fi

t0=$(now)
if clean "$app" doctor --json > "$work/doctor.json" 2> "$work/doctor.err"; then
  t_doctor=$(elapsed "$t0" "$(now)")
  if json_check "$work/doctor.json" 'isinstance(d, dict) and d.get("llama_gpu_offload") is not None'; then
    pass "doctor --json in ${t_doctor} s (JSON; bundled llama.cpp found)"
  else
    fail "doctor --json is not the expected JSON (or llama.cpp was not found in the bundle):"; head -c 2000 "$work/doctor.json" >&2
  fi
else
  fail "doctor --json exited non-zero:"; cat "$work/doctor.err" >&2
fi

# torch is the heaviest part of the bundle and the easiest to break: ask whether it sees CUDA.
if clean "$app" doctor --json --torch > "$work/doctor-torch.json" 2> "$work/doctor-torch.err" \
   && json_check "$work/doctor-torch.json" 'd.get("torch_cuda") is not None'; then
  pass "doctor --json --torch (torch loads inside the bundle)"
else
  fail "torch does not load inside the bundle (doctor --torch):"; cat "$work/doctor-torch.json" "$work/doctor-torch.err" >&2
fi

hf_model="$root/tests/.models/tiny"
if [ -f "$hf_model/config.json" ]; then
  if clean "$app" inspect --json "$hf_model" > "$work/inspect-hf.json" 2> "$work/inspect-hf.err" \
     && json_check "$work/inspect-hf.json" 'd.get("architecture") == "LlamaForCausalLM" and d.get("parameters", 0) > 0'; then
    pass "inspect $hf_model"
  else
    fail "inspect of a Hugging Face folder:"; cat "$work/inspect-hf.json" "$work/inspect-hf.err" >&2
  fi
else
  echo "skip: no test model at $hf_model (it is built by the test suite's fixtures)"
fi

gguf=$(find "$root/dist/quantdesk" -name '*.gguf' -print -quit)
if [ -n "$gguf" ] && clean "$app" inspect --json "$gguf" > "$work/inspect-gguf.json" 2> "$work/inspect-gguf.err" \
   && json_check "$work/inspect-gguf.json" 'd.get("kind") == "gguf" and d.get("parameters", 0) > 0'; then
  pass "inspect $(basename "$gguf") (the GGUF reader inside the bundle)"
else
  fail "inspect of a GGUF file ($gguf):"; cat "$work/inspect-gguf.json" "$work/inspect-gguf.err" >&2 2>/dev/null || true
fi

t0=$(now)
if clean env QT_QPA_PLATFORM=offscreen "$app" gui --screenshot shot.png > "$work/gui.out" 2>&1; then
  t_gui=$(elapsed "$t0" "$(now)")
  if [ "$(head -c 8 "$work/shot.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] \
     && [ "$(stat -c %s "$work/shot.png")" -gt 2000 ]; then
    pass "gui --screenshot shot.png in ${t_gui} s ($(stat -c %s "$work/shot.png") bytes of PNG)"
    [ -z "${KEEP_SHOT:-}" ] || cp "$work/shot.png" "$KEEP_SHOT"
  else
    fail "gui --screenshot did not write a PNG"
  fi
else
  fail "gui --screenshot exited non-zero:"; cat "$work/gui.out" >&2
fi

# The model stack inside the bundle, on the small test model: conversion and quantization in child
# processes (torch, the converter, gguf, llama.cpp), chat through llama.cpp and through transformers,
# and evaluation on the texts shipped in resources/eval.
if [ "$stack" = yes ] && [ -f "$hf_model/config.json" ]; then
  if clean "$app" quantize "$hf_model" --to Q8_0 --out out > "$work/quantize.out" 2>&1 && [ -f "$work/out/tiny-Q8_0.gguf" ]; then
    pass "quantize tiny --to Q8_0 (HF -> GGUF -> Q8_0 in child processes)"
    if clean "$app" chat out/tiny-Q8_0.gguf --prompt Hi --max-tokens 4 --temperature 0 > "$work/chat.out" 2>&1; then
      pass "chat with the GGUF (llama.cpp)"
    else
      fail "chat with the GGUF:"; cat "$work/chat.out" >&2
    fi
    if clean "$app" eval out/tiny-Q8_0.gguf --no-speed --ctx 128 --json > "$work/eval.json" 2> "$work/eval.err" \
       && json_check "$work/eval.json" 'd.get("ppl", 0) > 0'; then
      pass "eval on the shipped texts (resources/eval inside the bundle)"
    else
      fail "eval:"; cat "$work/eval.json" "$work/eval.err" >&2
    fi
  else
    fail "quantize tiny --to Q8_0:"; cat "$work/quantize.out" >&2
  fi
  if clean "$app" quantize "$hf_model" --to bnb-int8 --out out > "$work/bnb.out" 2>&1 && [ -d "$work/out/tiny-bnb-int8" ]; then
    pass "quantize tiny --to bnb-int8 (bitsandbytes, saved, reloaded and verified)"
  else
    fail "quantize tiny --to bnb-int8:"; cat "$work/bnb.out" >&2
  fi
  if clean "$app" chat "$hf_model" --prompt Hi --max-tokens 4 --temperature 0 > "$work/chat-hf.out" 2>&1; then
    pass "chat with the Hugging Face folder (transformers)"
  else
    fail "chat with the Hugging Face folder:"; cat "$work/chat-hf.out" >&2
  fi
fi

echo "bundle: $(du -sh dist/quantdesk | cut -f1) in dist/quantdesk/"
if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed." >&2
  exit 1
fi
echo "The frozen app works outside the virtual environment."
