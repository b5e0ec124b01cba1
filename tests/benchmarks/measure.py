"""One command timed in a small wrapper process that also reads its peak memory (the largest process in
its tree, ``RUSAGE_CHILDREN``): what every benchmark here compares QuantDesk and its reference with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

_WRAPPER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
wall = time.perf_counter() - t
print(json.dumps({"rc": p.returncode, "wall": wall, "tail": p.stderr.decode(errors="replace")[-1500:],
                  "peak_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def measure(cmd: list, cwd: Path = ROOT) -> dict:
    """{"rc", "wall" (s), "tail" (stderr's end), "peak_kb"} of ``cmd``; exits with its stderr if it failed."""
    out = subprocess.run([PY, "-c", _WRAPPER, *map(str, cmd)], capture_output=True, text=True, cwd=cwd)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"command failed ({result['rc']}): {' '.join(map(str, cmd))}\n{result['tail']}")
    return result
