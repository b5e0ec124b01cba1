"""Perplexity of smollm2 on a ~20k-token text: QuantDesk against a bare llama-cpp-python evaluation.

Both evaluate the same 512-token chunks of the same tokens with the same
threads. The bare loop is what one writes with llama-cpp-python alone: a
``logits_all`` model, ``reset()`` + ``eval(chunk)`` per chunk, then the
log-softmax of the second half in numpy. QuantDesk's run is
``engine.evaluate.perplexity`` as ``quantdesk eval`` uses it. Target: QuantDesk
takes at most 1.2 × the bare time (and both give the same PPL). The two run
chunk by chunk in alternation, so a busy machine slows both alike.

    .venv/bin/python tests/benchmarks/perplexity_speed.py [--model FILE] [--threads 2] [--ctx 512]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.chat_speed import default_model  # noqa: E402


class BareLoop:
    """Perplexity with llama-cpp-python alone, one chunk at a time."""

    def __init__(self, model: Path, n_ctx: int, threads: int) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(str(model), n_ctx=n_ctx, n_batch=n_ctx, n_threads=threads,
                                   n_threads_batch=threads, logits_all=True, verbose=False)
        self.add_bos = llama_cpp.llama_vocab_get_add_bos(self.llm._model.vocab)
        self.n_ctx = n_ctx
        self.nll = 0.0
        self.count = 0

    def chunk(self, tokens: list[int], i: int) -> None:
        n_ctx, first = self.n_ctx, self.n_ctx // 2
        chunk = list(tokens[i * n_ctx : (i + 1) * n_ctx])
        if self.add_bos:
            chunk[0] = self.llm.token_bos()
        self.llm.reset()
        self.llm.eval(chunk)
        logits = self.llm.scores[first : n_ctx - 1]
        top = logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(logits - top).sum(axis=1, dtype=np.float64)) + top[:, 0]
        targets = np.asarray(chunk[first + 1 :])
        self.nll += float((lse - logits[np.arange(len(targets)), targets]).sum())
        self.count += len(targets)

    @property
    def ppl(self) -> float:
        return math.exp(self.nll / self.count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=20_480, help="tokens of the benchmark text to use")
    args = parser.parse_args()

    from engine.evaluate.perplexity import perplexity
    from engine.evaluate.scorers import GgufScorer
    from engine.evaluate.texts import benchmark_text

    model = args.model or default_model()
    scorer = GgufScorer(model, n_ctx=args.ctx, threads=args.threads)
    text = benchmark_text(max(90_000, args.tokens * 5))
    tokens = scorer.tokenize(text)[: args.tokens]
    if len(tokens) < args.tokens:
        raise SystemExit(f"the benchmark text gives only {len(tokens)} tokens")
    bare = BareLoop(model, args.ctx, args.threads)
    # The machine may be shared: alternate chunk by chunk (and which goes first) so
    # both sides see the same load. Each next() of QuantDesk's job scores one chunk.
    gen = perplexity(scorer, text, args.ctx, tokens=tokens)
    ours_s = bare_s = 0.0
    n_chunks = len(tokens) // args.ctx
    for i in range(n_chunks):
        for side in ((0, 1) if i % 2 == 0 else (1, 0)):
            start = time.perf_counter()
            if side == 0:
                next(gen)
                ours_s += time.perf_counter() - start
            else:
                bare.chunk(tokens, i)
                bare_s += time.perf_counter() - start
    start = time.perf_counter()
    try:
        next(gen)
        raise SystemExit("the perplexity job yielded more events than chunks")
    except StopIteration as stop:
        ours = stop.value
    ours_s += time.perf_counter() - start
    scorer.close()
    bare_ppl = bare.ppl
    ratio = ours_s / bare_s
    print(f"model {model.name}, {len(tokens)} tokens, {ours.chunks} chunks of {args.ctx}, threads {args.threads}")
    print(f"QuantDesk: PPL {ours.ppl:.4f} ± {ours.ppl_stderr:.4f} in {ours_s:.1f} s")
    print(f"bare llama-cpp-python: PPL {bare_ppl:.4f} in {bare_s:.1f} s")
    print(f"time ratio {ratio:.3f} ({'meets' if ratio <= 1.2 else 'misses'} the ≤ 1.2 target)")
    print(json.dumps({"benchmark": "perplexity_speed", "model": model.name, "tokens": len(tokens),
                      "threads": args.threads, "ctx": args.ctx, "quantdesk_s": round(ours_s, 2),
                      "bare_s": round(bare_s, 2), "ppl": round(ours.ppl, 4), "bare_ppl": round(bare_ppl, 4),
                      "ratio": round(ratio, 4), "target": 1.2, "ok": ratio <= 1.2}))


if __name__ == "__main__":
    main()
