"""The importance matrix's cost and worth on smollm2.

Cost: computing the matrix (engine.backends.gguf.imatrix, model load included)
against one perplexity pass of the same model over the same tokens
(engine.evaluate.perplexity through transformers, load included; and through
llama.cpp on the BF16 GGUF, which is what llama-imatrix itself runs on). The
chunks are the calibration samples, so both see exactly the same tokens.

Worth (``--kld``): mean KLD against the BF16 GGUF on a slice of the project's
evaluation text (8 chunks of 256 tokens) for Q4_K_M, IQ4_XS and IQ3_XXS made with and without the
matrix (llama_model_quantize called directly, so IQ3_XXS can be made without).

    /work/venv11/bin/python tests/benchmarks/imatrix.py [--samples 32] [--seq-len 512] [--threads 2] [--kld]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MODELS = ROOT / "tests" / ".models"
KLD_TYPES = ("Q4_K_M", "IQ4_XS", "IQ3_XXS")


def timed_imatrix(source: Path, samples: list[list[int]], threads: int):
    from engine.backends.gguf.imatrix import compute_imatrix

    start = time.monotonic()
    data = compute_imatrix(None, source, samples, threads, None)
    return data, time.monotonic() - start


def timed_perplexity(model: Path, samples: list[list[int]], threads: int) -> tuple[float, float]:
    from engine.evaluate.perplexity import perplexity
    from engine.evaluate.scorers import open_scorer
    from engine.jobs import run_job

    start = time.monotonic()
    scorer = open_scorer(model, n_ctx=len(samples[0]), threads=threads)
    try:
        flat = [t for s in samples for t in s]
        result = run_job(perplexity(scorer, "", len(samples[0]), tokens=flat))
    finally:
        scorer.close()
    return result.ppl, time.monotonic() - start


def quantize(src: Path, dst: Path, type_name: str, data, threads: int) -> None:
    import llama_cpp

    from engine.backends.gguf.imatrix_use import imatrix_array
    from engine.formats import FORMATS

    keep: list = []
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(FORMATS[f"gguf:{type_name}"].gguf_ftype)
    params.nthread = threads
    if data is not None:
        params.imatrix = imatrix_array(llama_cpp, data, keep)
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"llama.cpp could not make {type_name}")


def kld_table(bf16: Path, data, threads: int) -> dict[str, dict[str, float]]:
    from engine.evaluate.perplexity import perplexity, score_original
    from engine.evaluate.scorers import open_scorer
    from engine.evaluate.texts import default_text
    from engine.jobs import run_job

    ctx = 256
    base = open_scorer(bf16, n_ctx=ctx, threads=threads)
    try:
        ref = run_job(score_original(base, default_text(), ctx, max_tokens=8 * ctx))
    finally:
        base.close()
    table: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for type_name in KLD_TYPES:
            for label, matrix in (("without", None), ("with", data)):
                out = Path(tmp) / f"{type_name}-{label}.gguf"
                quantize(bf16, out, type_name, matrix, threads)
                scorer = open_scorer(out, n_ctx=ctx, threads=threads)
                try:
                    result = run_job(perplexity(scorer, "", ctx, base=ref))
                finally:
                    scorer.close()
                out.unlink()
                table.setdefault(type_name, {})[label] = round(float(result.kld_mean), 4)
                print(f"  {type_name:8s} {label:7s} KLD {result.kld_mean:.4f}", flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODELS / "smollm2")
    parser.add_argument("--gguf", type=Path, default=MODELS / "gguf" / "smollm2" / "smollm2-BF16.gguf")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kld", action="store_true", help="also measure KLD with and without the matrix")
    args = parser.parse_args()

    from engine.calibration import CalibrationOptions, build_calibration, hf_encoder
    from engine.modelcard import read_chat_template

    calib = build_calibration(CalibrationOptions(samples=args.samples, seq_len=args.seq_len),
                              hf_encoder(args.model), chat_template=read_chat_template(args.model))
    tokens = calib.tokens
    print(f"{args.samples} samples × {args.seq_len} tokens = {tokens} tokens, {args.threads} threads", flush=True)
    data, t_imatrix = timed_imatrix(args.model, calib.samples, args.threads)
    print(f"importance matrix:            {t_imatrix:7.1f} s ({len(data.entries)} entries)", flush=True)
    ppl_hf, t_hf = timed_perplexity(args.model, calib.samples, args.threads)
    print(f"perplexity, transformers:     {t_hf:7.1f} s (PPL {ppl_hf:.2f})", flush=True)
    ppl_cpp, t_cpp = timed_perplexity(args.gguf, calib.samples, args.threads)
    print(f"perplexity, llama.cpp (BF16): {t_cpp:7.1f} s (PPL {ppl_cpp:.2f})", flush=True)
    report = {"tokens": tokens, "imatrix_s": round(t_imatrix, 1), "perplexity_transformers_s": round(t_hf, 1),
              "perplexity_llama_cpp_s": round(t_cpp, 1), "ratio_vs_transformers": round(t_imatrix / t_hf, 2),
              "ratio_vs_llama_cpp": round(t_imatrix / t_cpp, 2)}
    if args.kld:
        report["kld"] = kld_table(args.gguf, data, args.threads)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
