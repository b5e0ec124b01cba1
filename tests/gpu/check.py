"""On an NVIDIA machine: quantize smollm2 to each calibrated format on CUDA, load each on the GPU, measure.

For every format (GPTQ 4-bit, AWQ 4-bit, and FP8 when this QuantDesk has it): time and peak
memory of ``python -m engine quantize --device cuda``, then, with plain transformers on the
GPU, the greedy answer to one question, decode tokens per second and peak GPU memory.
One JSON object per format on stdout, and a summary at the end.

Run through tests/gpu/check.sh (it checks for a GPU first).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is the capital of France?"

_WRAPPER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
print(json.dumps({"rc": p.returncode, "wall": time.perf_counter() - t, "tail": p.stderr.decode(errors="replace")[-1500:],
                  "peak_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""

_LOAD = r"""
import json, sys, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder = sys.argv[1]
torch.cuda.reset_peak_memory_stats()
t = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(folder, device_map="cuda")
load_s = time.perf_counter() - t
tok = AutoTokenizer.from_pretrained(folder)
inputs = tok.apply_chat_template([{"role": "user", "content": sys.argv[2]}], add_generation_prompt=True,
                                 return_tensors="pt", return_dict=True).to("cuda")
with torch.no_grad():
    logits = model(**inputs).logits
    answer = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = model.generate(**inputs, max_new_tokens=128, min_new_tokens=128, do_sample=False)
    torch.cuda.synchronize()
    gen_s = time.perf_counter() - t
print(json.dumps({
    "finite": bool(torch.isfinite(logits).all()),
    "answer": tok.decode(answer[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True),
    "decode_tokens_per_s": round((out.shape[1] - inputs["input_ids"].shape[1]) / gen_s, 1),
    "load_s": round(load_s, 2),
    "gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20),
    "layer": type(model.model.layers[0].self_attn.q_proj).__name__,
    "gpu": torch.cuda.get_device_name(), "capability": ".".join(map(str, torch.cuda.get_device_capability())),
}))
"""


def _run(cmd: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *map(str, cmd)], capture_output=True, text=True,
                         cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def formats() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from engine.backends.registry import BACKENDS

    return ["gptq-4bit", "awq-4bit"] + (["fp8"] if "fp8" in BACKENDS else [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=ROOT / "tests" / ".models" / "smollm2")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--group-size", type=int, default=64)  # smollm2's 576-wide layers rule out 128
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="quantdesk-gpu-check-"))
    results = []
    for fmt in formats():
        cmd = [sys.executable, "-m", "engine", "quantize", args.model, "--to", fmt, "--out", out_dir, "--device",
               "cuda", "--no-check", "--overwrite"]
        if fmt != "fp8":
            cmd += ["--calib-samples", args.samples, "--calib-seq-len", args.seq_len, "--group-size",
                    args.group_size]
        started = time.perf_counter()
        made = _run(cmd)
        row: dict = {"format": fmt, "quantize_s": round(time.perf_counter() - started, 1),
                     "quantize_peak_ram_mb": round(made["peak_kb"] / 1024), "quantize_rc": made["rc"]}
        if made["rc"] != 0:
            row["error"] = made["tail"][-600:]
            results.append(row)
            print(json.dumps(row), flush=True)
            continue
        folder = next(p for p in out_dir.iterdir() if p.is_dir() and p.name.startswith(args.model.name + "-" + fmt))
        loaded = subprocess.run([sys.executable, "-c", _LOAD, folder, QUESTION], capture_output=True, text=True)
        try:
            row.update(json.loads(loaded.stdout.strip().splitlines()[-1]))
        except (IndexError, ValueError):
            row["load_error"] = loaded.stderr[-600:]
        row["size_mb"] = round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20, 1)
        results.append(row)
        print(json.dumps(row), flush=True)
    source = subprocess.run([sys.executable, "-c", _LOAD, args.model, QUESTION], capture_output=True, text=True)
    try:
        results.insert(0, {"format": "bf16 (source)", **json.loads(source.stdout.strip().splitlines()[-1])})
    except (IndexError, ValueError):
        results.insert(0, {"format": "bf16 (source)", "load_error": source.stderr[-600:]})
    print(json.dumps({"out": str(out_dir), "results": results}, indent=2))
    return 0 if all(r.get("quantize_rc", 0) == 0 and r.get("finite", False) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
