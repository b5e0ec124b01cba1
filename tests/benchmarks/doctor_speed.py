"""How fast ``quantdesk doctor`` answers, against ``quantdesk --help`` measured in the same run.

Also shows why doctor asks llama.cpp's shared library through ctypes instead of
importing ``llama_cpp``: the import alone costs more than the whole doctor run.

    .venv/bin/python tests/benchmarks/doctor_speed.py [repeats]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

PROBE = (
    "from engine.hardware import llama_gpu_offload; llama_gpu_offload()"
)
CASES = {
    "quantdesk --help": [sys.executable, "-m", "engine", "--help"],
    "quantdesk doctor --json": [sys.executable, "-m", "engine", "doctor", "--json"],
    "llama.cpp offload via ctypes": [sys.executable, "-c", PROBE],
    "import llama_cpp": [sys.executable, "-c", "import llama_cpp; llama_cpp.llama_supports_gpu_offload()"],
    "python (empty)": [sys.executable, "-c", "pass"],
}


def median_seconds(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    results = {name: median_seconds(cmd, repeats) for name, cmd in CASES.items()}
    ref = results["quantdesk --help"]
    for name, seconds in results.items():
        print(f"{name:32} {seconds * 1000:7.0f} ms   {seconds / ref:5.2f} x --help")
    print(f"(median of {repeats}; the machine may be shared, so compare ratios, not milliseconds)")


if __name__ == "__main__":
    main()
