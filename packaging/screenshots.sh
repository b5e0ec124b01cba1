#!/usr/bin/env bash
# Renders the README's screenshots from the real window into docs/screenshots/*.png.
#
#   packaging/screenshots.sh [MODEL]
#
# MODEL defaults to the demo model (SmolLM2-135M-Instruct, prepared once). The
# outputs shown (GGUF Q4_K_M and Q8_0, evaluated against the original) are made
# once into a cache folder and reused. Each picture is `quantdesk gui --screenshot`
# offscreen, with settings kept away from the user's: 1280x800 and 1920x1080, a small
# laptop screen (1024x640), 200% scaling (QT_SCALE_FACTOR=2 on 1920x1080) and a dark palette; then
# the hand-off of an output (Serve with llama.cpp) and Get from Hugging Face with its plan, where the Hub
# is the test suite's stand-in on 127.0.0.1 (nothing reaches the internet).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export QT_QPA_PLATFORM=offscreen
MODEL=${1:-$("$PY" -m engine demo | tail -n 1)}
NAME=$(basename "$MODEL")
CACHE=${QUANTDESK_SCREENSHOT_CACHE:-$HOME/.cache/quantdesk-screenshots}
OUT="$CACHE/outputs"
SHOTS=docs/screenshots
mkdir -p "$OUT" "$SHOTS"
export XDG_CONFIG_HOME="$CACHE/config"  # the window's QSettings, not the user's

missing=()
for type in Q4_K_M Q8_0; do
  [ -f "$OUT/$NAME-$type.gguf" ] || missing+=("$type")
done
if [ ${#missing[@]} -gt 0 ]; then
  nice "$PY" -m engine quantize "$MODEL" --to "$(IFS=,; echo "${missing[*]}")" --out "$OUT"
fi
for type in Q4_K_M Q8_0; do
  file="$OUT/$NAME-$type.gguf"
  if ! grep -q '"ppl"' "$file.quantdesk.json" 2>/dev/null; then
    nice "$PY" -m engine eval "$file" --base "$MODEL"
  fi
done

shot() {  # shot NAME SIZE TAB [extra args]
  local name=$1 size=$2 tab=$3
  shift 3
  "$PY" -m qtapp.launch gui --model "$MODEL" --out "$OUT" --tab "$tab" --size "$size" \
    --screenshot "$SHOTS/$name-$size.png" "$@"
  echo "$SHOTS/$name-$size.png"
}

# The first start, before any model was opened (its own empty settings).
XDG_CONFIG_HOME="$CACHE/config-first" "$PY" -m qtapp.launch gui --size 1280x800 \
  --screenshot "$SHOTS/start-1280x800.png"
echo "$SHOTS/start-1280x800.png"

for size in 1280x800 1920x1080; do
  shot recommendation "$size" recommendation
  shot quantize "$size" quantize
  shot results "$size" results
done
shot chat 1280x800 chat --prompt "What is the capital of France?"
shot chat-side-by-side 1920x1080 chat --side-by-side --prompt "What is the capital of France?"

# A small laptop screen, and 200% scaling: 960x540 logical pixels make a 1920x1080 picture.
shot recommendation 1024x640 recommendation
shot quantize 1024x640 quantize
QT_SCALE_FACTOR=2 "$PY" -m qtapp.launch gui --model "$MODEL" --out "$OUT" --tab results --size 960x540 \
  --screenshot "$SHOTS/results-200pct-1920x1080.png"
echo "$SHOTS/results-200pct-1920x1080.png"
# A dark palette (the chart follows it).
shot results-dark 1280x800 results --theme dark

# Handing an output on: the newest GGUF selected in Results, with the llama-server command for this machine.
shot handoff 1280x800 results --hand-on llama-server

# Get from Hugging Face with its plan shown, on a first start. The Hub is the test suite's stand-in
# (tests/hub/fakehub.py) on 127.0.0.1, serving MODEL's own files under its Hub name: nothing reaches
# the internet, and the Hugging Face cache is one of the screenshots' own.
HUB_URL_FILE=$(mktemp)
"$PY" - "$MODEL" "HuggingFaceTB/$NAME" >"$HUB_URL_FILE" <<'PYEOF' &
import sys, time
from pathlib import Path
from tests.hub.fakehub import FakeHub, Repo
with FakeHub({sys.argv[2]: Repo.from_folder(Path(sys.argv[1]))}) as hub:
    print(hub.url, flush=True)
    while True:
        time.sleep(60)
PYEOF
HUB_PID=$!
trap 'kill "$HUB_PID" 2>/dev/null; rm -f "$HUB_URL_FILE"' EXIT
for _ in $(seq 100); do [ -s "$HUB_URL_FILE" ] && break; sleep 0.2; done
[ -s "$HUB_URL_FILE" ] || { echo "the stand-in Hub did not start" >&2; exit 1; }
rm -rf "$CACHE/hf"
env -u HF_HUB_OFFLINE -u HF_TOKEN HF_ENDPOINT="$(head -n 1 "$HUB_URL_FILE")" HF_HOME="$CACHE/hf" \
  HF_HUB_DISABLE_XET=1 NO_PROXY='*' no_proxy='*' XDG_CONFIG_HOME="$CACHE/config-get" \
  "$PY" -m qtapp.launch gui --size 1280x800 --get "HuggingFaceTB/$NAME" --screenshot "$SHOTS/get-1280x800.png"
echo "$SHOTS/get-1280x800.png"
