# Shared by packaging/install.sh (Linux) and packaging/install-macos.sh; sourced, not run.
# Expects: here (the checkout), venv, python, dry_run (yes/no), script (the installer's name).
# The environment itself is always made by packaging/setup_venv.sh; this adds the decisions around it:
# leave an up-to-date environment alone, recreate it when switching builds, stamp what it has.

usage() {  # the installer's opening comment
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

say() { printf '%s\n' "$*"; }
die() { printf '%s: %s\n' "$script" "$*" >&2; exit 1; }

run() {  # run a command, or only show it with --dry-run
  if [ "$dry_run" = yes ]; then say "  would run: $*"; else "$@"; fi
}

label() {
  case "$1" in
    cuda) echo "CUDA (NVIDIA GPU)" ;;
    metal) echo "Metal (Apple GPU)" ;;
    mixed) echo "mixed CPU and GPU" ;;
    *) echo "CPU" ;;
  esac
}

stamp() { printf '%s/.installed-%s\n' "$venv" "$1"; }  # the same stamp the Makefile keeps

up_to_date() {  # the environment has these builds and nothing it was made from changed since
  local s
  s=$(stamp "$1")
  [ -x "$venv/bin/quantdesk" ] && [ -f "$s" ] || return 1
  [ ! pyproject.toml -nt "$s" ] && [ ! constraints.txt -nt "$s" ] && [ ! packaging/setup_venv.sh -nt "$s" ]
}

env_builds() {  # prints the builds the environment really has: cpu, cuda, metal or mixed
  [ -x "$venv/bin/python" ] || return 1
  "$venv/bin/python" - <<'PY' 2>/dev/null
import sys

import llama_cpp
import torch

gpu_llama = bool(llama_cpp.llama_supports_gpu_offload())
if torch.version.cuda and gpu_llama:
    print("cuda")
elif sys.platform == "darwin" and gpu_llama:
    print("metal")
elif not torch.version.cuda and not gpu_llama:
    print("cpu")
else:
    print("mixed")
PY
}

is_venv() { [ -f "$1/pyvenv.cfg" ]; }

check_python() {  # $1: how to install Python on this system
  command -v "$python" >/dev/null 2>&1 || die "Python 3.10 or newer is needed; $1"
  "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || die "$("$python" -V 2>&1) is too old: QuantDesk needs Python 3.10 or newer; $1 (PYTHON=python3.12 $script picks another)"
  "$python" -c 'import ensurepip, venv' 2>/dev/null \
    || die "Python's venv module is missing; install it (e.g. sudo apt install python3-venv) and run this again."
}

# prepare_env BUILDS [VAR=value ...]: make $venv hold these builds (cpu, cuda, metal) through
# setup_venv.sh, run with GPU=BUILDS; the VAR=value pairs go into its environment and win.
prepare_env() {
  local gpu=$1 previous
  shift
  if up_to_date "$gpu"; then
    say "The environment in $venv already has these builds and is up to date; leaving it as it is."
    return 0
  fi
  # pip keeps a torch or llama-cpp-python of another build (same version number), so a switch
  # starts from a fresh environment.
  if [ -e "$venv" ] && previous=$(env_builds) && [ "$previous" != "$gpu" ]; then
    is_venv "$venv" || die "$venv does not look like a Python environment; move it away and run this again."
    say "Switching $venv from the $(label "$previous") builds to the $(label "$gpu") builds: recreating it."
    run rm -rf "$venv"
  fi
  say "Installing into $venv (the first time takes a while: llama-cpp-python is compiled, about 6 minutes on two cores) ..."
  run env GPU="$gpu" PYTHON="$python" "$@" bash packaging/setup_venv.sh "$venv"
  run rm -f "$venv"/.installed-*
  run touch "$(stamp "$gpu")"
  if [ "$dry_run" = no ]; then
    "$venv/bin/quantdesk" --version >/dev/null \
      || die "the environment was built but quantdesk does not start; see the messages above."
    say "Installed $("$venv/bin/quantdesk" --version) with the $(label "$gpu") builds in $venv."
  fi
}

remove_env() {
  local verb=Removed
  [ "$dry_run" = no ] || verb="Would remove"
  if [ ! -e "$venv" ]; then
    say "No environment at $venv; nothing to remove there."
    return 0
  fi
  is_venv "$venv" || die "$venv does not look like a Python environment; leaving it alone."
  run rm -rf "$venv"
  say "$verb the environment $venv."
}

say_data_kept() {
  say "Your models and settings were kept (QuantDesk's data folder: $1); remove them yourself if you want them gone."
}
