"""Generation speed through QuantDesk's chat engine against a bare llama-cpp-python loop.

Same GGUF, same prompt tokens, same threads and context, greedy, the same
number of tokens. Each measurement runs in its own process (llama.cpp's CPU
threads are per process and per calling thread, so two models in one process
would disturb each other), QuantDesk and bare alternate, and the medians are
compared. Target: QuantDesk ≥ 0.95 × bare.

    .venv/bin/python tests/benchmarks/chat_speed.py [--model FILE] [--threads 2] [--tokens 96] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PROMPT = "Write a long, detailed story about a lighthouse keeper who keeps a ledger of the weather."


def default_model() -> Path:
    for candidate in (ROOT / "tests/.models/gguf/smollm2/smollm2-Q8_0.gguf",
                      ROOT / "tests/.models/chat-gguf/smollm2-Q8_0.gguf"):
        if candidate.is_file():
            return candidate
    from tests.fixtures.chat import CHAT_GGUF_DIR, _convert, _quantize
    from tests.fixtures.models import MODELS_DIR

    f16 = _convert(MODELS_DIR / "smollm2", CHAT_GGUF_DIR / "smollm2-F16.gguf")
    return _quantize(f16, CHAT_GGUF_DIR / "smollm2-Q8_0.gguf", "Q8_0")


def bare_tps(llm, prompt: list[int], n: int) -> float:  # noqa: ANN001
    """The plainest loop: llama-cpp-python's own generate, greedy, n tokens."""
    first = last = None
    count = 0
    for _token in llm.generate(prompt, temp=0.0, top_k=40, top_p=0.95, min_p=0.0, repeat_penalty=1.0,
                               reset=True):
        now = time.perf_counter()
        first = first or now
        last = now
        count += 1
        if count >= n:
            break
    return (count - 1) / (last - first)


def measure(side: str, model: Path, threads: int, ctx: int, tokens: int) -> dict:
    """One process's figure: generate twice (the first warms up), report the second."""
    from engine.chat import Sampling, open_chat
    from engine.jobs import run_job

    chat = run_job(open_chat(model, threads=threads, n_ctx=ctx).load())
    prompt = chat._render([{"role": "user", "content": PROMPT}])
    if side == "bare":
        llm = chat._llm  # the same llama.cpp context, driven directly from this thread
        chat._llm = None
        bare_tps(llm, prompt, tokens)
        tps = bare_tps(llm, prompt, tokens)
        llm.close()
        return {"tps": tps, "tokens": tokens}
    sampling = Sampling(temperature=0, top_k=40, top_p=0.95, repeat_penalty=1.0, max_tokens=tokens)
    for _ in range(2):
        chat.reset()
        reply = chat.ask(PROMPT, sampling)
    chat.close()
    return {"tps": reply.tokens_per_second, "tokens": reply.tokens}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--side", choices=("quantdesk", "bare"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    model = args.model or default_model()
    if args.side:
        print(json.dumps(measure(args.side, model, args.threads, args.ctx, args.tokens)))
        return

    def run(side: str) -> dict:
        cmd = [sys.executable, __file__, "--side", side, "--model", str(model), "--threads", str(args.threads),
               "--ctx", str(args.ctx), "--tokens", str(args.tokens)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    ours, theirs = [], []
    for i in range(args.repeats):
        order = ("quantdesk", "bare") if i % 2 == 0 else ("bare", "quantdesk")
        got = {side: run(side) for side in order}
        ours.append(got["quantdesk"]["tps"])
        theirs.append(got["bare"]["tps"])
        print(f"  quantdesk {ours[-1]:7.1f} tok/s ({got['quantdesk']['tokens']} tokens)   "
              f"bare {theirs[-1]:7.1f} tok/s", flush=True)
    q, b = statistics.median(ours), statistics.median(theirs)
    ratio = q / b
    print(f"model {model.name}, threads {args.threads}, ctx {args.ctx}, median of {args.repeats}")
    print(f"QuantDesk chat {q:.1f} tok/s, bare llama-cpp-python {b:.1f} tok/s: ratio {ratio:.3f} "
          f"({'meets' if ratio >= 0.95 else 'misses'} the 0.95 target)")
    print(json.dumps({"benchmark": "chat_speed", "model": model.name, "threads": args.threads, "ctx": args.ctx,
                      "quantdesk_tps": round(q, 2), "bare_tps": round(b, 2), "ratio": round(ratio, 4),
                      "target": 0.95, "ok": ratio >= 0.95}))


if __name__ == "__main__":
    main()
