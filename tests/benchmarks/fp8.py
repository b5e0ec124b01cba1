"""FP8 benchmark: QuantDesk's job against compressed-tensors driven by hand, in the same run.

Reference (what a user of the library would type): load the model with
transformers, apply compressed-tensors' FP8_DYNAMIC scheme to every Linear but
lm_head, set each weight's per-channel scale with ``calculate_qparams``,
compress the model and save it (``ModelCompressor``), then reload it once with
transformers and run it, as QuantDesk's verification does. QuantDesk:
``python -m engine quantize SRC --to fp8 --no-check``-equivalent (the job without the quick check).
Each command runs under a wrapper that times it and reads its peak memory
(``RUSAGE_CHILDREN``: the largest process in the tree). The two outputs' tensors are compared too.

Targets (issue 11): time ≤ 1.05 × reference, peak memory ≤ 1.10 × reference.
Run: python tests/benchmarks/fp8.py [--repeat 2] [--model DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from measure import PY, ROOT, measure  # noqa: E402 - tests/benchmarks/measure.py beside this script

_REFERENCE = r"""
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.quantization import (QuantizationConfig, apply_quantization_config,
                                             preset_name_to_scheme)
from compressed_tensors.quantization.utils import calculate_qparams
src, out = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(src, dtype="auto")
tok = AutoTokenizer.from_pretrained(src)
config = QuantizationConfig(config_groups={"group_0": preset_name_to_scheme("FP8_DYNAMIC", ["Linear"])},
                            ignore=["lm_head"])
apply_quantization_config(model, config)
with torch.no_grad():
    for module in model.modules():
        scheme = getattr(module, "quantization_scheme", None)
        if scheme is not None and scheme.weights is not None:
            w = module.weight
            low, high = torch.aminmax(w, dim=1, keepdim=True)
            scale, _ = calculate_qparams(low, high, scheme.weights)
            module.weight_scale.data = scale.to(module.weight_scale.dtype)
compressor = ModelCompressor.from_pretrained_model(model, "float-quantized")
compressor.compress_model(model)
model.save_pretrained(out)
compressor.update_config(out)
tok.save_pretrained(out)
del model
again = AutoModelForCausalLM.from_pretrained(out, device_map="cpu")
ids = tok("The capital of France is Paris. The capital of Spain is", return_tensors="pt")["input_ids"]
with torch.no_grad():
    assert torch.isfinite(again(ids).logits).all()
"""

_QUANTDESK = r"""
import sys
from pathlib import Path
from engine.backends import QuantizeRequest
from engine.formats import parse_targets
from engine.jobs import run_job
from engine.quantize import quantize
request = QuantizeRequest(source=Path(sys.argv[1]), targets=parse_targets("fp8"), out_dir=Path(sys.argv[2]),
                          device="cpu", check=False)
run_job(quantize(request, None))
"""

_COMPARE = r"""
import sys, torch
from safetensors.torch import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
common = sorted(set(a) & set(b))
same = sum(torch.equal(a[k].view(torch.uint8) if a[k].dtype == torch.float8_e4m3fn else a[k],
                       b[k].view(torch.uint8) if b[k].dtype == torch.float8_e4m3fn else b[k]) for k in common)
print(f"{same} of {len(common)} shared tensors identical; only in reference: {sorted(set(a) - set(b))[:3]}, "
      f"only in QuantDesk: {sorted(set(b) - set(a))[:3]}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "tests" / ".models" / "smollm2")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    ref_runs, qd_runs = [], []
    with tempfile.TemporaryDirectory(prefix="qd-fp8-bench-") as tmp:
        work = Path(tmp)
        for round_ in range(args.repeat):
            for name, script, runs in (("reference", _REFERENCE, ref_runs), ("quantdesk", _QUANTDESK, qd_runs)):
                out = work / f"{name}-{round_}"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                runs.append(measure([PY, "-c", script, args.model, out]))
                print(f"{name:9s} round {round_ + 1}: {runs[-1]['wall']:.1f} s, "
                      f"peak {runs[-1]['peak_kb'] / 1024:.0f} MiB", flush=True)
        ref_file = work / "reference-0" / "model.safetensors"
        qd_file = work / "quantdesk-0" / f"{args.model.name}-fp8-dynamic" / "model.safetensors"
        print(subprocess.run([PY, "-c", _COMPARE, ref_file, qd_file], capture_output=True, text=True,
                             cwd=ROOT).stdout.strip())
    ref_t, qd_t = statistics.median(r["wall"] for r in ref_runs), statistics.median(r["wall"] for r in qd_runs)
    ref_m, qd_m = statistics.median(r["peak_kb"] for r in ref_runs), statistics.median(r["peak_kb"] for r in qd_runs)
    print(f"time   {qd_t:.1f} s vs {ref_t:.1f} s: ratio {qd_t / ref_t:.2f} (target <= 1.05)")
    print(f"memory {qd_m / 1024:.0f} MiB vs {ref_m / 1024:.0f} MiB: ratio {qd_m / ref_m:.2f} (target <= 1.10)")


if __name__ == "__main__":
    main()
