"""How fast a model reads a prompt and writes tokens, and the most memory it took.

Prompt processing is one batched pass over ``n_prompt`` tokens from a fresh
context; generation is ``n_gen`` greedy tokens after it, one at a time, as a
chat produces them. Peak memory is the process's peak resident set (run it in
a child process for a clean figure) and, on CUDA with transformers, the peak
GPU allocation.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.evaluate.texts import default_text


@dataclass
class SpeedResult:
    prompt_tps: float
    gen_tps: float
    prompt_tokens: int
    gen_tokens: int
    peak_rss_bytes: int
    peak_gpu_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def measure_speed(
    path: Path, *, device: str = "cpu", threads: int | None = None, n_prompt: int = 256, n_gen: int = 64,
    gpu_layers: int | None = None,
) -> SpeedResult:
    from engine.chat.factory import model_kind

    if model_kind(Path(path)) == "gguf":
        return _gguf_speed(Path(path), device, threads, n_prompt, n_gen, gpu_layers)
    return _hf_speed(Path(path), device, threads, n_prompt, n_gen)


def _gguf_speed(path: Path, device: str, threads: int | None, n_prompt: int, n_gen: int,
                gpu_layers: int | None) -> SpeedResult:
    from engine.chat.llama_cpp import open_llama

    layers = 0
    n_ctx = n_prompt + n_gen + 8
    if device == "cuda":
        from engine.chat.offload import free_vram_bytes, plan_gpu_layers, require_gpu_build

        require_gpu_build()
        layers = gpu_layers if gpu_layers is not None else plan_gpu_layers(path, n_ctx, free_vram_bytes()).gpu_layers
    llm = open_llama(path, n_ctx=n_ctx, threads=threads, gpu_layers=layers, n_batch=n_prompt)
    try:
        prompt = llm.tokenize(default_text().encode("utf-8"), add_bos=True)[:n_prompt]
        start = time.perf_counter()
        llm.eval(prompt)
        prompt_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(n_gen):
            token = llm.sample(temp=0.0, top_k=1, repeat_penalty=1.0)
            llm.eval([token])
        gen_s = time.perf_counter() - start
    finally:
        llm.close()
    return SpeedResult(len(prompt) / prompt_s, n_gen / gen_s, len(prompt), n_gen, peak_rss_bytes())


def _hf_speed(path: Path, device: str, threads: int | None, n_prompt: int, n_gen: int) -> SpeedResult:
    import torch

    from engine.chat.transformers import load_hf_model

    model, tok = load_hf_model(path, device, threads=threads)
    ids = torch.tensor([tok(default_text())["input_ids"][:n_prompt]], device=model.device)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    with torch.inference_mode():
        sync()
        start = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        sync()
        prompt_s = time.perf_counter() - start
        past = out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(n_gen):
            out = model(input_ids=token, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = out.logits[:, -1:].argmax(-1)
        sync()
        gen_s = time.perf_counter() - start
    gpu = int(torch.cuda.max_memory_allocated()) if cuda else None
    return SpeedResult(ids.shape[1] / prompt_s, n_gen / gen_s, int(ids.shape[1]), n_gen, peak_rss_bytes(), gpu)
