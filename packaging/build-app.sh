#!/usr/bin/env bash
# Build the frozen one-folder app: dist/quantdesk/quantdesk (PyInstaller, CPU builds).
#
#   packaging/build-app.sh
#
# Every build starts from scratch (PyInstaller --clean): its cache judges a source file by its time
# stamp against the last build's, so a file changed while a build was running could be left stale.
# Needs the project's virtual environment (make venv, or packaging/install.sh); installs the pinned
# PyInstaller into it when missing. VENV=path picks another environment. The build runs under
# `nice -n 10` so the machine stays usable. The finished folder replaces dist/quantdesk/ only when
# the build succeeded; a failed build leaves the previous one as it was.
set -euo pipefail
PYINSTALLER_VERSION=6.22.3
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
venv=${VENV:-.venv}
py="$venv/bin/python"
for arg in "$@"; do
  case "$arg" in
    -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; exit 0 ;;
    *) echo "build-app.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

if [ ! -x "$py" ]; then
  echo "build-app.sh: no virtual environment at $venv; create it first: make venv (or packaging/install.sh)" >&2
  exit 1
fi
if [ "$("$py" -c 'import importlib.metadata as m
try: print(m.version("pyinstaller"))
except m.PackageNotFoundError: print("")')" != "$PYINSTALLER_VERSION" ]; then
  echo "Installing PyInstaller $PYINSTALLER_VERSION into $venv ..."
  "$py" -m pip install --disable-pip-version-check -q -c constraints.txt "pyinstaller==$PYINSTALLER_VERSION"
fi
if "$py" -c 'import sys, llama_cpp; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)' 2>/dev/null; then
  echo "build-app.sh: warning: this environment has a GPU build of llama-cpp-python; the frozen app is" \
       "meant for CPU builds and will need the same GPU libraries on the machines it runs on." >&2
fi

work=build/pyinstaller
staging="$work/dist"
rm -rf "$staging" "$work/quantdesk"
start=$(date +%s)
echo "Building dist/quantdesk with PyInstaller $PYINSTALLER_VERSION (several minutes) ..."
PYTHONWARNINGS=ignore::DeprecationWarning nice -n 10 "$py" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$staging" --workpath "$work" packaging/quantdesk.spec
"$staging/quantdesk/quantdesk" --version >/dev/null  # the bundle starts at all
mkdir -p dist
rm -rf dist/quantdesk.old
[ ! -e dist/quantdesk ] || mv dist/quantdesk dist/quantdesk.old
mv "$staging/quantdesk" dist/quantdesk
rm -rf dist/quantdesk.old
echo "Built dist/quantdesk/quantdesk in $(( $(date +%s) - start )) s; size $(du -sh dist/quantdesk | cut -f1)."
echo "Try: dist/quantdesk/quantdesk doctor --json"
