#!/usr/bin/env bash
# QuantDesk's one-step install for Linux (macOS: packaging/install-macos.sh, Windows:
# packaging/install-windows.ps1).
#
#   packaging/install.sh                 pick the builds for this machine, install, add the menu entry
#   packaging/install.sh --cuda | --cpu  choose the builds yourself (switching recreates the environment)
#   packaging/install.sh --dry-run       say what it would choose and do; change nothing
#   packaging/install.sh --desktop-only  only (re)install the menu entry and icon
#   packaging/install.sh --no-desktop    install without the menu entry
#   packaging/install.sh --exec PATH     the menu entry starts PATH (e.g. dist/quantdesk/quantdesk)
#   packaging/install.sh --uninstall     remove the menu entry, the icon and the environment
#                                        (add --desktop-only to keep the environment)
#
# The environment is .venv/ in the checkout (VENV=path or --venv path for another), made by
# packaging/setup_venv.sh with the versions in constraints.txt: the same one `make run` uses.
# With an NVIDIA GPU (found through NVML, or nvidia-smi) and the CUDA compiler (nvcc), it installs
# the CUDA builds of torch and llama-cpp-python; otherwise the CPU builds. Re-running is safe:
# an environment that is already up to date is left alone.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
venv=${VENV:-.venv}
python=${PYTHON:-python3}
data_home=${XDG_DATA_HOME:-$HOME/.local/share}
apps_dir="$data_home/applications"
icon_dir="$data_home/icons/hicolor/scalable/apps"
entry="$apps_dir/quantdesk.desktop"
icon="$icon_dir/quantdesk.svg"

choice=""
action=install
desktop=yes
env_step=yes
dry_run=no
exec_path=""

script=install.sh
# shellcheck source=packaging/install-common.sh
. packaging/install-common.sh

while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) choice=cpu ;;
    --cuda) choice=cuda ;;
    --metal) die "the Metal build is for Apple Silicon Macs; there, run packaging/install-macos.sh" ;;
    --uninstall) action=uninstall ;;
    --desktop-only) env_step=no ;;
    --no-desktop) desktop=no ;;
    --dry-run) dry_run=yes ;;
    --venv) [ $# -ge 2 ] || die "--venv needs a folder"; venv=$2; shift ;;
    --exec) [ $# -ge 2 ] || die "--exec needs the program the menu entry should start"; exec_path=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

case "$(uname -s)" in
  Linux) ;;
  Darwin) die "this is the Linux installer; on a Mac run packaging/install-macos.sh" ;;
  *) die "this is the Linux installer; on Windows run packaging/install-windows.ps1 in PowerShell" ;;
esac

# --- the window's system libraries -------------------------------------------------------------

# Qt's xcb platform plugin aborts without these (qtapp/platform_check.py checks the same list when
# the window starts). Each entry is soname:Debian package; QUANTDESK_XCB_LIBRARIES replaces the list.
xcb_libraries=${QUANTDESK_XCB_LIBRARIES:-"libxcb-cursor.so.0:libxcb-cursor0 libxcb-icccm.so.4:libxcb-icccm4
  libxcb-image.so.0:libxcb-image0 libxcb-keysyms.so.1:libxcb-keysyms1 libxcb-randr.so.0:libxcb-randr0
  libxcb-render-util.so.0:libxcb-render-util0 libxcb-shape.so.0:libxcb-shape0 libxcb-xkb.so.1:libxcb-xkb1
  libxkbcommon-x11.so.0:libxkbcommon-x11-0 libxcb-util.so.1:libxcb-util1 libxcb-xfixes.so.0:libxcb-xfixes0
  libxcb-sync.so.1:libxcb-sync1 libxcb-shm.so.0:libxcb-shm0 libxcb-render.so.0:libxcb-render0
  libX11-xcb.so.1:libx11-xcb1 libxkbcommon.so.0:libxkbcommon0 libxcb.so.1:libxcb1"}

check_xcb_libraries() {  # warns (the command line works without them); never stops the install
  local known entry missing=() packages=()
  known=$( (ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null) | awk '{print $1}')
  [ -n "$known" ] || return 0
  for entry in $xcb_libraries; do
    if ! printf '%s\n' "$known" | grep -qxF "${entry%%:*}"; then
      missing+=("${entry%%:*}")
      packages+=("${entry#*:}")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "warning: the window needs system libraries that are missing here (${missing[*]}); install them with: sudo apt install ${packages[*]}" >&2
}

check_xcb_libraries

# --- which builds ------------------------------------------------------------------------------

# Prints "<count> <name of the first GPU>" when NVML (the NVIDIA driver's library) sees a GPU.
nvml_probe() {
  command -v "$python" >/dev/null 2>&1 || return 1
  "$python" - <<'PY' 2>/dev/null
import ctypes
import sys

for name in ("libnvidia-ml.so.1", "libnvidia-ml.so"):
    try:
        nvml = ctypes.CDLL(name)
        break
    except OSError:
        pass
else:
    sys.exit(1)
if nvml.nvmlInit_v2() != 0:
    sys.exit(1)
try:
    count = ctypes.c_uint(0)
    if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0 or count.value == 0:
        sys.exit(1)
    handle = ctypes.c_void_p()
    label = ctypes.create_string_buffer(96)
    if nvml.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(handle)) == 0:
        nvml.nvmlDeviceGetName(handle, label, 96)
    print(count.value, label.value.decode(errors="replace") or "NVIDIA GPU")
finally:
    nvml.nvmlShutdown()
PY
}

detect_gpu() {  # sets gpu_found (yes/no) and gpu_how
  local probe
  if probe=$(nvml_probe) && [ -n "$probe" ]; then
    gpu_found=yes
    gpu_how="NVML reports ${probe%% *} NVIDIA GPU(s), the first: ${probe#* }"
  elif command -v nvidia-smi >/dev/null 2>&1 && probe=$(nvidia-smi -L 2>/dev/null | head -n 1) && [ -n "$probe" ]; then
    gpu_found=yes
    gpu_how="nvidia-smi lists ${probe%% (*}"
  else
    gpu_found=no
    gpu_how="no NVIDIA GPU found (no NVIDIA driver library, and nvidia-smi lists none)"
  fi
}

find_nvcc() {
  local c
  for c in "$(command -v nvcc 2>/dev/null || true)" "${CUDA_HOME:-/nonexistent}/bin/nvcc" /usr/local/cuda/bin/nvcc; do
    if [ -n "$c" ] && [ -x "$c" ]; then printf '%s\n' "$c"; return 0; fi
  done
  return 1
}

choose_builds() {  # sets gpu and why
  detect_gpu
  if [ -n "$choice" ]; then
    gpu=$choice
    why="you asked for them; detection found: $gpu_how"
    return
  fi
  if [ "$gpu_found" = no ]; then
    gpu=cpu
    why="$gpu_how"
    return
  fi
  local nvcc
  if nvcc=$(find_nvcc); then
    gpu=cuda
    why="$gpu_how, and the CUDA compiler is at $nvcc"
    case ":$PATH:" in *":$(dirname "$nvcc"):"*) ;; *) export PATH="$(dirname "$nvcc"):$PATH" ;; esac
  else
    gpu=cpu
    why="$gpu_how, but the CUDA compiler (nvcc) that llama-cpp-python's CUDA build needs is missing;
  install the CUDA toolkit (e.g. sudo apt install nvidia-cuda-toolkit), then run: packaging/install.sh --cuda"
  fi
}

# --- the environment ---------------------------------------------------------------------------

check_prerequisites() {
  check_python "install it (e.g. sudo apt install python3 python3-venv)."
  command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || command -v clang++ >/dev/null 2>&1 \
    || die "a C++ compiler is needed to build llama-cpp-python; install one (e.g. sudo apt install build-essential)."
  if [ "$gpu" = cuda ] && ! find_nvcc >/dev/null; then
    die "the CUDA builds need the CUDA compiler nvcc; install the CUDA toolkit (e.g. sudo apt install nvidia-cuda-toolkit), or use: packaging/install.sh --cpu"
  fi
}

install_env() {
  choose_builds
  say "QuantDesk will use the $(label "$gpu") builds of torch and llama-cpp-python:"
  say "  $why."
  if [ "$gpu" = cuda ]; then
    say "  To use the CPU builds instead: packaging/install.sh --cpu"
  else
    say "  To use the CUDA builds instead (NVIDIA GPU with the CUDA toolkit): packaging/install.sh --cuda"
  fi
  if ! up_to_date "$gpu"; then
    if [ "$dry_run" = yes ]; then
      (check_prerequisites) || say "  (a real install would stop there)"
    else
      check_prerequisites
    fi
  fi
  prepare_env "$gpu"
}

# --- the menu entry ----------------------------------------------------------------------------

desktop_quote() {  # an Exec argument, quoted as the Desktop Entry spec asks
  local s=$1
  s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//\`/\\\`}; s=${s//\$/\\\$}
  s=${s//\\/\\\\}  # string values escape backslashes once more
  printf '"%s"' "$s"
}

install_desktop() {
  local target=${exec_path:-$venv/bin/quantdesk}
  case "$target" in /*) ;; *) target="$here/$target" ;; esac
  [ -x "$target" ] || [ "$dry_run" = yes ] \
    || die "$target is not there to start; install first (packaging/install.sh) or give --exec PATH."
  local rendered
  rendered=$(sed -e "s|@EXEC@|$(desktop_quote "$target" | sed 's/[|&\\]/\\&/g')|" \
                 -e "s|@TRYEXEC@|$(printf '%s' "$target" | sed 's/[|&\\]/\\&/g')|" packaging/quantdesk.desktop.in)
  if [ "$dry_run" = yes ]; then
    say "  would write $entry (starts $target) and $icon"
    return
  fi
  local check
  check=$(mktemp -d)
  printf '%s\n' "$rendered" > "$check/quantdesk.desktop"
  if command -v desktop-file-validate >/dev/null 2>&1 && ! desktop-file-validate "$check/quantdesk.desktop" >&2; then
    rm -rf "$check"
    die "the menu entry did not validate (see above); nothing was installed for it."
  fi
  mkdir -p "$apps_dir" "$icon_dir"
  cp -f "$check/quantdesk.desktop" "$entry.part" && mv -f "$entry.part" "$entry"
  rm -rf "$check"
  cp -f resources/icons/quantdesk.svg "$icon.part" && mv -f "$icon.part" "$icon"
  refresh_menus
  say "Added QuantDesk to the applications menu: $entry (icon: $icon)."
}

refresh_menus() {
  if command -v update-desktop-database >/dev/null 2>&1; then update-desktop-database -q "$apps_dir" 2>/dev/null || true; fi
  if command -v gtk-update-icon-cache >/dev/null 2>&1 && [ -f "$data_home/icons/hicolor/index.theme" ]; then
    gtk-update-icon-cache -q -t "$data_home/icons/hicolor" 2>/dev/null || true
  fi
}

uninstall() {
  local removed=no f
  for f in "$entry" "$icon"; do
    if [ -e "$f" ]; then run rm -f "$f"; removed=yes; fi
  done
  if [ "$removed" = no ]; then
    say "No QuantDesk menu entry was installed; nothing to remove there."
  elif [ "$dry_run" = no ]; then
    refresh_menus
    say "Removed the menu entry and icon."
  fi
  if [ "$env_step" = yes ]; then remove_env; fi
  say_data_kept "${XDG_DATA_HOME:-~/.local/share}/quantdesk"
}

if [ "$action" = uninstall ]; then
  uninstall
  exit 0
fi
if [ "$env_step" = yes ]; then install_env; fi
if [ "$desktop" = yes ]; then install_desktop; fi
if [ "$env_step" = yes ] && [ "$dry_run" = no ]; then
  where=""
  [ "$desktop" = no ] || where=" from the applications menu, or"
  make_hint=""
  if [ "$venv" = .venv ]; then
    make_hint="   (make run works too)"
    [ "$gpu" != cuda ] || make_hint="   (make run works too; with these builds: make run GPU=cuda)"
  fi
  say "Start it$where with: $venv/bin/quantdesk$make_hint"
fi
