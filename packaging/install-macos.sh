#!/usr/bin/env bash
# QuantDesk's one-step install for macOS (Linux: packaging/install.sh, Windows:
# packaging/install-windows.ps1).
#
#   packaging/install-macos.sh             pick the builds for this Mac, install, add QuantDesk.app
#   packaging/install-macos.sh --cpu       CPU builds even on Apple Silicon
#   packaging/install-macos.sh --metal     the Metal build of llama-cpp-python (Apple Silicon only)
#   packaging/install-macos.sh --dry-run   say what it would choose and do; change nothing
#   packaging/install-macos.sh --no-app    install without ~/Applications/QuantDesk.app
#   packaging/install-macos.sh --app-only  only (re)make ~/Applications/QuantDesk.app
#   packaging/install-macos.sh --uninstall remove QuantDesk.app and the environment
#                                          (add --app-only to keep the environment)
#
# On Apple Silicon llama-cpp-python is compiled with CMAKE_ARGS="-DGGML_METAL=on" so chat and
# evaluation run on the GPU; torch's PyPI build already uses the GPU through MPS. Intel Macs get
# the CPU builds. The environment is .venv/ in the checkout (VENV=path or --venv path), made by
# packaging/setup_venv.sh with the versions in constraints.txt. Needs Python 3.10+ (python.org or
# `brew install python@3.12`) and the Xcode command line tools (`xcode-select --install`).
# Re-running is safe: an environment that is already up to date is left alone.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
venv=${VENV:-.venv}
python=${PYTHON:-python3}
app="$HOME/Applications/QuantDesk.app"

choice=""
action=install
app_step=yes
env_step=yes
dry_run=no

script=install-macos.sh
# shellcheck source=packaging/install-common.sh
. packaging/install-common.sh

while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) choice=cpu ;;
    --metal) choice=metal ;;
    --cuda) die "CUDA needs an NVIDIA GPU, which Macs do not have; on Apple Silicon use --metal" ;;
    --uninstall) action=uninstall ;;
    --app-only) env_step=no ;;
    --no-app) app_step=no ;;
    --dry-run) dry_run=yes ;;
    --venv) [ $# -ge 2 ] || die "--venv needs a folder"; venv=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

[ "$(uname -s)" = Darwin ] || die "this is the macOS installer; on Linux run packaging/install.sh"

apple_silicon() { [ "$(sysctl -n hw.optional.arm64 2>/dev/null || echo 0)" = 1 ]; }

choose_builds() {  # sets gpu and why
  if apple_silicon && [ "$(uname -m)" != arm64 ]; then
    die "this shell runs under Rosetta (x86_64) on an Apple Silicon Mac; open a native terminal (or use an arm64 Python) so the Metal build can be compiled."
  fi
  if [ "$choice" = metal ] && ! apple_silicon; then
    die "the Metal build needs an Apple Silicon Mac (M1 or later); this one has an Intel processor: use --cpu"
  fi
  if [ -n "$choice" ]; then
    gpu=$choice
    why="you asked for them"
  elif apple_silicon; then
    gpu=metal
    why="this Mac has Apple Silicon ($(sysctl -n machdep.cpu.brand_string 2>/dev/null || echo arm64)), whose GPU llama.cpp drives through Metal"
  else
    gpu=cpu
    why="this Mac has an Intel processor; llama.cpp's Metal build needs Apple Silicon"
  fi
}

check_prerequisites() {
  check_python "install it from python.org or with Homebrew: brew install python@3.12"
  xcode-select -p >/dev/null 2>&1 \
    || die "the Xcode command line tools are needed to compile llama-cpp-python; run: xcode-select --install"
}

install_env() {
  choose_builds
  say "QuantDesk will use the $(label "$gpu") builds:"
  say "  $why."
  if [ "$gpu" = metal ]; then
    say "  To use the CPU builds instead: packaging/install-macos.sh --cpu"
  elif apple_silicon; then
    say "  To use the Metal build instead: packaging/install-macos.sh --metal"
  fi
  up_to_date "$gpu" || check_prerequisites
  if [ "$gpu" = metal ]; then
    # CMAKE_ARGS reaches llama-cpp-python's compile; setup_venv.sh's GPU=metal does the same.
    if grep -q '^ *metal)' packaging/setup_venv.sh; then
      prepare_env metal CMAKE_ARGS="-DGGML_METAL=on"
    else
      prepare_env metal GPU=cpu CMAKE_ARGS="-DGGML_METAL=on"
    fi
  else
    prepare_env cpu CMAKE_ARGS="-DGGML_METAL=off"
  fi
}

# --- ~/Applications/QuantDesk.app: a small launcher bundle that starts the environment's quantdesk ----

make_app() {
  local target="$here/$venv"
  case "$venv" in /*) target=$venv ;; esac
  target="$target/bin/quantdesk"
  if [ "$dry_run" = yes ]; then
    say "  would make $app (starts $target)"
    return 0
  fi
  [ -x "$target" ] || die "$target is not there to start; install first (packaging/install-macos.sh)."
  local part="$app.part"
  rm -rf "$part"
  mkdir -p "$part/Contents/MacOS" "$part/Contents/Resources"
  printf '#!/bin/sh\nexec %q "$@"\n' "$target" > "$part/Contents/MacOS/QuantDesk"
  chmod +x "$part/Contents/MacOS/QuantDesk"
  local version
  version=$("$target" --version | awk '{print $2}')
  cat > "$part/Contents/Info.plist" <<PLIST
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>CFBundleName</key><string>QuantDesk</string>
  <key>CFBundleDisplayName</key><string>QuantDesk</string>
  <key>CFBundleIdentifier</key><string>org.quantdesk.QuantDesk</string>
  <key>CFBundleVersion</key><string>$version</string>
  <key>CFBundleShortVersionString</key><string>$version</string>
  <key>CFBundlePackageType</key><string>APPL</string>
  <key>CFBundleExecutable</key><string>QuantDesk</string>
  <key>CFBundleIconFile</key><string>quantdesk.icns</string>
  <key>NSHighResolutionCapable</key><true/>
</dict>
</plist>
PLIST
  # The icon: resources/icons/quantdesk.svg drawn at 1024 px by Qt (already in the environment),
  # then turned into .icns by macOS's own sips.
  "$venv/bin/python" packaging/render_icon.py resources/icons/quantdesk.svg "$part/Contents/Resources/quantdesk.png" 1024 \
    && sips -s format icns "$part/Contents/Resources/quantdesk.png" --out "$part/Contents/Resources/quantdesk.icns" >/dev/null \
    || say "(Could not make the app icon; QuantDesk.app gets the default one.)"
  rm -f "$part/Contents/Resources/quantdesk.png"
  rm -rf "$app"
  mv "$part" "$app"
  say "Made $app: start QuantDesk from Launchpad, Spotlight or ~/Applications."
}

uninstall() {
  if [ -e "$app" ]; then
    run rm -rf "$app"
    [ "$dry_run" = yes ] || say "Removed $app."
  else
    say "No $app; nothing to remove there."
  fi
  if [ "$env_step" = yes ]; then remove_env; fi
  say_data_kept "~/Library/Application Support/quantdesk"
}

if [ "$action" = uninstall ]; then
  uninstall
  exit 0
fi
if [ "$env_step" = yes ]; then install_env; fi
if [ "$app_step" = yes ]; then make_app; fi
if [ "$env_step" = yes ] && [ "$dry_run" = no ]; then
  say "Start it from ~/Applications/QuantDesk.app, or: $venv/bin/quantdesk"
fi
