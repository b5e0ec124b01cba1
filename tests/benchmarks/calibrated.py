"""GPTQ/AWQ benchmark: QuantDesk's job against gptqmodel driven by hand, same settings, same run.

Reference (what a user of the library would write): tokenize the same calibration
samples, ``GPTQModel.load`` in the same compute type QuantDesk picks (float32 for GPTQ on
a CPU, the source's bfloat16 for AWQ), ``quantize``, ``save``, then reload with plain
transformers and run one forward pass, as QuantDesk's verification does. QuantDesk:
``python -m engine quantize --to gptq-4bit|awq-4bit --no-check``. Every command runs
under a small wrapper that times it and reads its peak memory (``RUSAGE_CHILDREN``:
the largest process in the tree).

Targets (issue 11): time ≤ 1.05 × the reference, peak memory ≤ 1.10 × the reference.

Run: python tests/benchmarks/calibrated.py [--model DIR] [--samples 16] [--seq-len 256]
     [--group-size 64] [--methods gptq,awq] [--repeat 1] [--calib FILE]
The machine may be shared: runs are interleaved (reference, then QuantDesk) and medians reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from measure import PY, ROOT, measure  # noqa: E402 - tests/benchmarks/measure.py beside this script

_REFERENCE = r"""
import os, sys
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
sys.path.insert(0, sys.argv[1])
import torch
from engine.calibration import CalibrationOptions, build_calibration, hf_encoder
from engine.modelcard import read_chat_template
src, out, method, data, samples, seq_len, group = sys.argv[2:9]
calib = build_calibration(CalibrationOptions(data=data, samples=int(samples), seq_len=int(seq_len)),
                          hf_encoder(src), chat_template=read_chat_template(__import__("pathlib").Path(src)))
from gptqmodel import BACKEND, GPTQModel
from gptqmodel.quantization.config import AWQConfig, GPTQConfig
if method == "gptq":
    config = GPTQConfig(bits=4, group_size=int(group), sym=True, desc_act=False, damp_percent=0.05,
                        offload_to_disk=False)
    dtype, backend = torch.float32, BACKEND.AUTO
else:
    config = AWQConfig(bits=4, group_size=int(group), sym=True, offload_to_disk=False)
    dtype, backend = torch.bfloat16, BACKEND.AWQ_TORCH
model = GPTQModel.load(src, config, device="cpu", dtype=dtype)
model.quantize([{"input_ids": s, "attention_mask": [1] * len(s)} for s in calib.samples], batch_size=1,
               backend=backend)
model.save(out)
del model
from transformers import AutoModelForCausalLM, AutoTokenizer
reloaded = AutoModelForCausalLM.from_pretrained(out, device_map="cpu")
ids = AutoTokenizer.from_pretrained(out)("The capital of France is", return_tensors="pt")["input_ids"]
with torch.no_grad():
    assert torch.isfinite(reloaded(ids).logits).all()
"""


def reference(model: Path, out: Path, method: str, args: argparse.Namespace) -> dict:
    # gptqmodel writes a logs/ folder into the working directory: keep it beside the output, not in the checkout
    return measure([PY, "-c", _REFERENCE, ROOT, model, out, method, args.calib, args.samples, args.seq_len,
                    args.group_size], cwd=out.parent)


def quantdesk(model: Path, out: Path, method: str, args: argparse.Namespace) -> dict:
    return measure([PY, "-m", "engine", "quantize", model, "--to", f"{method}-4bit", "--out", out, "--no-check",
                    "--device", "cpu", "--calib", args.calib, "--calib-samples", args.samples,
                    "--calib-seq-len", args.seq_len, "--group-size", args.group_size])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "tests" / ".models" / "smollm2")
    parser.add_argument("--methods", default="gptq,awq")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--calib", default="builtin", help="calibration data, as --calib of quantdesk quantize")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="quantdesk-calibrated-bench-"))
    rows = []
    try:
        for method in args.methods.split(","):
            ref_walls, qd_walls, ref_peaks, qd_peaks = [], [], [], []
            for round_ in range(args.repeat):
                ref_out, qd_out = work / f"ref-{method}-{round_}", work / f"qd-{method}-{round_}"
                ref = reference(args.model, ref_out, method, args)
                qd = quantdesk(args.model, qd_out, method, args)
                ref_walls.append(ref["wall"])
                qd_walls.append(qd["wall"])
                ref_peaks.append(ref["peak_kb"])
                qd_peaks.append(qd["peak_kb"])
                shutil.rmtree(ref_out, ignore_errors=True)
                shutil.rmtree(qd_out, ignore_errors=True)
            ref_t, qd_t = statistics.median(ref_walls), statistics.median(qd_walls)
            ref_m, qd_m = statistics.median(ref_peaks), statistics.median(qd_peaks)
            rows.append({"method": method, "reference_s": round(ref_t, 1), "quantdesk_s": round(qd_t, 1),
                         "time_ratio": round(qd_t / ref_t, 3), "reference_peak_mb": round(ref_m / 1024),
                         "quantdesk_peak_mb": round(qd_m / 1024), "memory_ratio": round(qd_m / ref_m, 3),
                         "time_ok": qd_t <= 1.05 * ref_t, "memory_ok": qd_m <= 1.10 * ref_m,
                         "runs": {"reference_s": [round(x, 1) for x in ref_walls],
                                  "quantdesk_s": [round(x, 1) for x in qd_walls]}})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"model": str(args.model), "samples": args.samples, "seq_len": args.seq_len,
                      "group_size": args.group_size, "calib": args.calib, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
