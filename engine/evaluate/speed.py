"""How fast a model reads a prompt and writes tokens, and the most memory it took.

Prompt processing is one batched pass over ``n_prompt`` tokens from a fresh
context; generation is ``n_gen`` greedy tokens after it, one at a time, as a
chat produces them. Peak memory is the process's peak resident set (run it in
a child process for a clean figure) and, on CUDA with transformers, the peak
GPU allocation.

Every row of the Results table must be measured the same way, so
``speed_in_child`` measures in a fresh child process of its own: after the
scoring models are gone (one model at a time), with the threads resolved and
recorded, and at normal priority. The window runs its jobs niced; the child
asks for niceness 0 again, which Linux allows only where the user may raise
priority (root, or RLIMIT_NICE). Where it is refused the niceness it ran at is
recorded with the numbers (``niceness``) so the table can say so. A lock file
keeps two QuantDesk processes from timing models at the same moment.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.evaluate.texts import default_text
from engine.jobs import CancelToken, ChildReporter, JobGen, cpu_threads, relay, run_in_child


@dataclass
class SpeedResult:
    prompt_tps: float
    gen_tps: float
    prompt_tokens: int
    gen_tokens: int
    peak_rss_bytes: int
    peak_gpu_bytes: int | None = None
    threads: int | None = None  # the threads it ran with (resolved, never None once measured)
    niceness: int | None = None  # the process's niceness while measuring (0 is normal priority)
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        """Flat keys for the sidecar; ``speed_*`` say how the figures were measured."""
        data = asdict(self)
        data["speed_threads"] = data.pop("threads")
        data["speed_niceness"] = data.pop("niceness")
        data["speed_device"] = data.pop("device")
        data["speed_prompt_tokens"] = self.prompt_tokens
        data["speed_gen_tokens"] = self.gen_tokens
        return data


def reset_niceness() -> int:
    """Ask for normal priority again (a niced parent's children inherit its niceness); returns the niceness now."""
    with contextlib.suppress(OSError, AttributeError):
        if os.getpriority(os.PRIO_PROCESS, 0) > 0:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (OSError, AttributeError):
        return 0


LOCK_WAIT_S = 300.0  # a speed measurement takes seconds; waiting longer means the holder is stuck


@contextlib.contextmanager
def one_at_a_time() -> Iterator[None]:
    """Hold QuantDesk's speed lock so two processes never time models at once (no-op where locks are missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(tempfile.gettempdir()) / f"quantdesk-speed-{os.getuid() if hasattr(os, 'getuid') else 0}.lock"
    with path.open("a") as fh:
        # Bounded: a process that holds the lock and hangs must not stop this one for ever; past the
        # limit the timing goes ahead (figures taken beside another timing, never a wait without end).
        deadline = time.monotonic() + LOCK_WAIT_S
        held = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        try:
            yield
        finally:
            if held:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _speed_child(reporter: ChildReporter, path: str, device: str, threads: int | None, n_prompt: int, n_gen: int,
                 gpu_layers: int | None) -> dict[str, Any]:
    niceness = reset_niceness()
    with one_at_a_time():
        result = measure_speed(Path(path), device=device, threads=threads, n_prompt=n_prompt, n_gen=n_gen,
                               gpu_layers=gpu_layers)
    result.niceness = niceness
    return asdict(result)


def speed_in_child(
    path: Path, *, device: str = "cpu", threads: int | None = None, n_prompt: int = 256, n_gen: int = 64,
    gpu_layers: int | None = None, cancel: CancelToken | None = None,
) -> JobGen[SpeedResult]:
    """``measure_speed`` in a fresh child at normal priority where allowed (see the module)."""
    data = yield from relay(run_in_child(_speed_child, str(path), device, threads, n_prompt, n_gen, gpu_layers,
                                         cancel=cancel), lambda _item: None)
    return SpeedResult(**data)


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def measure_speed(
    path: Path, *, device: str = "cpu", threads: int | None = None, n_prompt: int = 256, n_gen: int = 64,
    gpu_layers: int | None = None,
) -> SpeedResult:
    from engine.chat.factory import model_kind

    threads = threads or cpu_threads()
    if model_kind(Path(path)) == "gguf":
        result = _gguf_speed(Path(path), device, threads, n_prompt, n_gen, gpu_layers)
    else:
        result = _hf_speed(Path(path), device, threads, n_prompt, n_gen)
    result.threads = threads
    result.device = device
    with contextlib.suppress(OSError, AttributeError):
        result.niceness = os.getpriority(os.PRIO_PROCESS, 0)
    return result


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
