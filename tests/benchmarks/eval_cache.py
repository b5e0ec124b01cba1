"""Evaluating three outputs with the original's scores cached, against scoring the original each time;
and the quick check against the quantize job it follows.

Part 1: Q8_0, Q6_K and Q4_K_M of the demo model, each evaluated against the
bf16 Hugging Face source (KLD + PPL, no speed) the way ``quantdesk eval --base``
runs it: first with ``cache=False`` (the original scored for every output, the
old way), then with the cache beside the outputs (the original scored once).
The two orders alternate per output so a busy machine slows both alike.

Part 2: one real quantize job (smollm2 → Q4_K_M), then ``quick_check`` of its
output against the source, cold (the source scored and asked) and warm (from
the cache), each as a fraction of the job's time. Target: at most 0.20.
``--quick-only`` runs part 2 alone.

    .venv/bin/python tests/benchmarks/eval_cache.py [--threads 2] [--chars 6000] [--quick-only]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MODELS = ROOT / "tests" / ".models"
TYPES = ("Q8_0", "Q6_K", "Q4_K_M")


def _timed_eval(model: Path, source: Path, text: str, threads: int, cache: bool) -> tuple[float, dict]:
    from engine.evaluate.run import EvalRequest, evaluate
    from engine.jobs import run_job

    request = EvalRequest(model=model, text=text, base=source, threads=threads, speed=False, cache=cache)
    start = time.perf_counter()
    data = run_job(evaluate(request, save=False))
    return time.perf_counter() - start, data


def part_cache(source: Path, threads: int, chars: int, work: Path) -> dict:
    from engine.evaluate.texts import default_text

    text = default_text()[:chars]
    outputs = {}
    for t in TYPES:
        link = work / f"smollm2-{t}.gguf"
        link.symlink_to(MODELS / "gguf" / "smollm2" / f"smollm2-{t}.gguf")
        outputs[t] = link
    old_s = new_s = 0.0
    rows = []
    for i, (t, path) in enumerate(outputs.items()):
        order = (False, True) if i % 2 == 0 else (True, False)
        got = {}
        for cached in order:
            seconds, data = _timed_eval(path, source, text, threads, cached)
            got[cached] = (seconds, data)
        old_s += got[False][0]
        new_s += got[True][0]
        rows.append({"type": t, "old_s": round(got[False][0], 1), "cached_s": round(got[True][0], 1),
                     "original_from_cache": got[True][1]["original_cached"],
                     "kld_same": abs(got[True][1]["kld_mean"] - got[False][1]["kld_mean"]) < 1e-9})
    return {"outputs": rows, "old_s": round(old_s, 1), "cached_s": round(new_s, 1),
            "ratio": round(new_s / old_s, 3), "tokens_chars": chars}


def part_quick_check(source: Path, threads: int, work: Path) -> dict:
    from engine.evaluate.quick_check import QUICK_CTX, QUICK_TOKENS, quick_check
    from engine.evaluate.verdict import PROMPTS
    from engine.jobs import run_job
    from tests.fixtures.gguf import run_quantize

    out = work / "job"
    out.mkdir()
    start = time.perf_counter()
    job = run_quantize(source, "Q4_K_M", out, threads=threads)
    job_s = time.perf_counter() - start
    output = job["outputs"]["Q4_K_M"]
    start = time.perf_counter()
    cold = run_job(quick_check(output, source, threads=threads))
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    warm = run_job(quick_check(output, source, threads=threads, save=False))
    warm_s = time.perf_counter() - start
    return {"job_s": round(job_s, 1), "quick_cold_s": round(cold_s, 1), "quick_warm_s": round(warm_s, 1),
            "cold_ratio": round(cold_s / job_s, 3), "warm_ratio": round(warm_s / job_s, 3),
            "quick_tokens": QUICK_TOKENS, "quick_ctx": QUICK_CTX, "prompts": len(PROMPTS),
            "answers_forced": cold["answers_forced"], "verdict": cold["verdict"], "evidence": cold["evidence"],
            "timings_cold": cold["timings"], "timings_warm": warm["timings"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chars", type=int, default=6000, help="characters of the shipped texts to evaluate")
    parser.add_argument("--quick-only", action="store_true", help="only time the quick check against its job")
    args = parser.parse_args()
    source = MODELS / "smollm2"
    with tempfile.TemporaryDirectory(prefix="quantdesk-bench-") as tmp:
        work = Path(tmp)
        (work / "eval").mkdir()
        cache = None
        if not args.quick_only:
            cache = part_cache(source, args.threads, args.chars, work / "eval")
            print(f"eval of {len(TYPES)} outputs: original scored each time {cache['old_s']} s, "
                  f"cached {cache['cached_s']} s, ratio {cache['ratio']}")
        quick = part_quick_check(source, args.threads, work)
        print(f"quantize job {quick['job_s']} s; quick check cold {quick['quick_cold_s']} s "
              f"(ratio {quick['cold_ratio']}), warm {quick['quick_warm_s']} s (ratio {quick['warm_ratio']}); "
              f"target ≤ 0.20")
        print(json.dumps({"benchmark": "eval_cache", "threads": args.threads, "cache": cache, "quick_check": quick}))


if __name__ == "__main__":
    main()
