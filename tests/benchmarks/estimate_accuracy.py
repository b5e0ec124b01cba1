"""How close the recommendation's peak-memory estimate is to what the runtimes really use.

Loads the real SmolLM2 GGUF files with llama.cpp and the bf16 checkpoint with
transformers, each in a fresh child process at the same context, fills the context
with a prompt, and compares the child's peak resident memory (minus the
bare interpreter's, measured in the same child) with ``engine.estimate``'s peak.

    .venv/bin/python tests/benchmarks/estimate_accuracy.py [--ctx 2048]

Needs the test models built (run the test suite once). CPU only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests" / ".models"

_LLAMA = """
import json, resource, sys
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import llama_cpp
llm = llama_cpp.Llama(sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=2, verbose=False, use_mmap=False)
tokens = llm.tokenize(b"The capital of France is Paris. " * 4000)[: int(sys.argv[2]) - 8]
llm.eval(tokens)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"runtime_kib": peak - base}))
"""

_HF = """
import json, resource, sys
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import torch, transformers
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
ids = torch.full((1, int(sys.argv[2])), 42)
with torch.no_grad():
    model(ids, use_cache=True, logits_to_keep=1)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"runtime_kib": peak - base}))
"""


def measure(script: str, path: Path, ctx: int) -> int:
    out = subprocess.run([sys.executable, "-c", script, str(path), str(ctx)], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["runtime_kib"] * 1024


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from engine.estimate import estimate
    from engine.formats import FORMATS
    from engine.inspect import inspect_model
    from engine.units import format_bytes

    parser = argparse.ArgumentParser()
    parser.add_argument("--ctx", type=int, default=2048)
    args = parser.parse_args()
    model = inspect_model(MODELS / "smollm2")
    rows = []
    for type_name in ("Q4_K_M", "Q8_0"):
        gguf = MODELS / "gguf" / "smollm2" / f"smollm2-{type_name}.gguf"
        if gguf.is_file():
            est = estimate(model, FORMATS[f"gguf:{type_name}"], args.ctx, "cpu").peak_bytes
            rows.append((f"llama.cpp {type_name}", est, measure(_LLAMA, gguf, args.ctx)))
    est = estimate(model, FORMATS["hf:fp16"], args.ctx, "cpu").peak_bytes
    rows.append(("transformers bf16", est, measure(_HF, MODELS / "smollm2", args.ctx)))
    print(f"SmolLM2-135M at {args.ctx} tokens on the CPU (peak RSS above a bare interpreter)")
    for name, est, real in rows:
        print(f"{name:20} estimated {format_bytes(est):>10}  measured {format_bytes(real):>10}  "
              f"estimate/measured {est / real:4.2f}")


if __name__ == "__main__":
    main()
