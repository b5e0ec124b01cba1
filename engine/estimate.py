"""How big a model becomes in a format, and how much memory it needs at a context length.

Public API:

- ``context_for(model, ctx=None) -> int``: 4096 by default, never more than the model's own
- ``check_context(model, n_ctx, free_bytes) -> int``: refuses, in one sentence naming the largest
  context that fits, a context above the model's own or beyond the free memory
- ``weights_bytes(model, fmt) -> int``: the file (or folder) size in that format
- ``kv_cache_bytes(model, n_ctx) -> int``
- ``overhead_bytes(model, fmt, n_ctx, device) -> int``: runtime buffers beyond weights and KV cache
- ``estimate(model, fmt, n_ctx, device) -> Estimate``: all of the above, with the peak
- ``gguf_gpu_layers(model, fmt, n_ctx, vram_bytes) -> int``: layers llama.cpp can put on a small GPU

Deliberate simplifications (estimates, good to a few percent on Llama-style models):

- GGUF: the layers at the type's published average bits per weight (llama.cpp's
  figures for Llama-3-8B); the output head (or the tied embedding) at Q6_K or better
  as llama.cpp keeps it; for k-quants, tensors whose rows are not a multiple of 256
  (e.g. SmolLM2's 576-wide rows) at the legacy type llama.cpp falls back to; about
  40 bytes of tokenizer metadata per vocabulary entry. Within ~2% of the real
  SmolLM2 Q4_K_M / Q6_K / Q8_0 files.
- bitsandbytes, FP8, AWQ, GPTQ: the decoder layers at the format's bits per weight,
  the token embedding and the output head kept in 16-bit as those methods do.
- KV cache in 16-bit (llama.cpp's and transformers' default); sliding-window layers
  hold only their window; MoE models count every expert (all must be in memory).
- Overhead: llama.cpp's compute buffer for one 512-token micro-batch (attention
  scores, activations; logits only for the last token) plus a process/CUDA-context allowance;
  transformers' activations for a full-context prefill plus a CUDA-context and
  allocator allowance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import QuantDeskError
from engine.formats import Format
from engine.inspect import ModelInfo

DEFAULT_CONTEXT = 4096
KV_BYTES_PER_ELEMENT = 2  # f16 cache
LLAMA_UBATCH = 512  # llama.cpp's default micro-batch
MiB = 1024**2

_BASE_OVERHEAD = {  # process + runtime allowance, by (runtime, device)
    ("gguf", "cuda"): 400 * MiB,  # CUDA context and cuBLAS workspace
    ("gguf", "cpu"): 80 * MiB,  # llama_cpp, numpy and the process
    ("hf", "cuda"): 600 * MiB,  # torch's CUDA context and caching allocator
    ("hf", "cpu"): 400 * MiB,  # libtorch and transformers in RAM (measured: about 230 MiB)
}
# llama.cpp quantizes rows in blocks of 256 for k-quants; a tensor whose rows are not a
# multiple of that falls back to a legacy type (llama-quant.cpp): bits per weight of that type.
QK_K = 256
_KQUANT_FALLBACK_BPW = {
    "Q2_K": 4.5, "Q3_K_M": 4.5, "Q4_K_S": 5.5, "Q4_K_M": 5.5, "Q5_K_S": 6.0, "Q5_K_M": 6.0, "Q6_K": 8.5,
    "IQ4_XS": 4.5, "IQ2_XS": 4.5, "IQ2_XXS": 4.5, "IQ1_S": 4.5,
}
GGUF_BYTES_PER_TOKEN = 40  # tokenizer vocabulary, scores and merges in the GGUF metadata
_ALLOCATOR_SLACK = 0.03  # torch's caching allocator fragmentation, share of the weights


@dataclass
class Estimate:
    format: str
    device: str  # "cuda" | "cpu"
    context: int
    size_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int

    @property
    def peak_bytes(self) -> int:
        return self.size_bytes + self.kv_cache_bytes + self.overhead_bytes

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "peak_bytes": self.peak_bytes}


def context_for(model: ModelInfo, ctx: int | None = None) -> int:
    """The context to plan for: ``ctx`` or 4096, never above what the model was trained for."""
    if ctx is not None:
        _at_least_one(ctx)
    wanted = ctx if ctx is not None else DEFAULT_CONTEXT
    return min(wanted, model.context_length) if model.context_length else wanted


def _at_least_one(ctx: int) -> None:
    if ctx < 1:
        raise QuantDeskError(f"The context must be at least 1 token (got {ctx}); try --ctx 4096.")


def runtime_bytes(model: ModelInfo, n_ctx: int, *, logits_tokens: int = 1) -> int:
    """What llama.cpp allocates for a context: the KV cache, one micro-batch's compute buffer, the logits."""
    hidden = model.hidden_size or 0
    inter = model.intermediate_size or 4 * hidden
    ub = min(LLAMA_UBATCH, n_ctx)
    compute = ub * 4 * (4 * hidden + inter + (model.attention_heads or 0) * n_ctx)
    return kv_cache_bytes(model, n_ctx) + compute + 4 * (model.vocab_size or 0) * max(1, logits_tokens)


def check_context(
    model: ModelInfo, n_ctx: int, free_bytes: int | None, *, resident_bytes: int = 0, all_logits: bool = False,
    option: str = "--ctx",
) -> int:
    """``n_ctx`` when the model supports it and what it allocates fits ``free_bytes``; else one sentence.

    Runs before llama.cpp (or transformers) allocates anything: the model's own
    maximum, then the KV cache, compute buffer and logits (``all_logits``: one row per
    token, as perplexity needs) plus ``resident_bytes`` (weights that must be loaded)
    against the free memory. The sentence names the largest context that fits.
    """
    _at_least_one(n_ctx)

    def need(n: int) -> int:
        return resident_bytes + runtime_bytes(model, n, logits_tokens=n if all_logits else 1)

    top = model.context_length or n_ctx
    largest = min(n_ctx, top)
    if free_bytes is not None and need(largest) > free_bytes:
        lo, hi = 0, largest  # need() grows with n: find the largest n with need(n) <= free_bytes
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if need(mid) <= free_bytes else (lo, mid - 1)
        largest = lo
    name = Path(model.path).name
    if model.context_length and n_ctx > model.context_length:
        fits = f"; {largest} is the largest that fits this machine's free memory" if largest < top else ""
        raise QuantDeskError(f"{name} supports a context of at most {top} tokens{fits}; "
                             f"use {option} {largest} or less.")
    if largest < n_ctx:
        gib = need(n_ctx) / 1024**3
        if largest < 1:
            raise QuantDeskError(f"{name} needs {gib:.1f} GiB at a context of {n_ctx} tokens and this machine has "
                                 "too little free memory for even one token; close other programs first.")
        raise QuantDeskError(
            f"A context of {n_ctx} tokens needs about {gib:.1f} GiB for {name}, more than the "
            f"{free_bytes / 1024**3:.1f} GiB free; use {option} {largest} or less (the largest that fits)."
        )
    return n_ctx


def _embedding_params(model: ModelInfo) -> int:
    if not model.vocab_size or not model.hidden_size:
        return 0
    tables = 1 if model.tied_embeddings else 2
    return min(model.parameters, tables * model.vocab_size * model.hidden_size)


def _needs_fallback(n: int | None) -> bool:
    return bool(n) and n % QK_K != 0  # type: ignore[operator]


def _fallback_share(model: ModelInfo) -> float:
    """Share of the layers' weights whose rows are not a multiple of 256 (k-quants cannot hold them)."""
    h = model.hidden_size or 0
    inter = model.intermediate_size or 4 * h
    q_out = (model.attention_heads or 0) * (model.head_dim or 0) or h
    kv_out = (model.kv_heads or 0) * (model.head_dim or 0) or h
    qkv, o, up, down = h * (q_out + 2 * kv_out), q_out * h, 2 * h * inter, inter * h
    total = qkv + o + up + down
    if not total:
        return 0.0
    bad = (qkv + up if _needs_fallback(h) else 0) + (o if _needs_fallback(q_out) else 0)
    return (bad + (down if _needs_fallback(inter) else 0)) / total


def _gguf_bytes(model: ModelInfo, fmt: Format) -> int:
    """GGUF size: layers at the type's average, the output head at Q6_K or better, row fallbacks, vocabulary."""
    bpw = fmt.bits_per_weight
    fallback = _KQUANT_FALLBACK_BPW.get(fmt.name)
    hidden_bad = _needs_fallback(model.hidden_size)
    out_bpw = bpw
    if bpw < 8.5:  # llama.cpp keeps the output (or tied embedding) at Q6_K at least
        out_bpw = max(bpw, 8.5 if hidden_bad else 6.5625)
    head = _embedding_params(model) // (1 if model.tied_embeddings else 2)
    embd = 0 if model.tied_embeddings else head
    layers = max(0, model.parameters - head - embd)
    layer_bpw = bpw
    if fallback is not None:
        share = _fallback_share(model)
        layer_bpw = (1 - share) * bpw + share * fallback
    embd_bpw = fallback if fallback is not None and hidden_bad else bpw
    vocab = (model.vocab_size or 0) * GGUF_BYTES_PER_TOKEN
    return int((layers * layer_bpw + head * out_bpw + embd * embd_bpw) / 8 + vocab)


def weights_bytes(model: ModelInfo, fmt: Format) -> int:
    """Size of the weights in ``fmt``; see the module notes for what is simplified."""
    if fmt.family == "gguf":
        return _gguf_bytes(model, fmt)
    if fmt.id == "hf:fp16":
        return int(model.parameters * fmt.bits_per_weight / 8)
    embed = _embedding_params(model)
    return int((model.parameters - embed) * fmt.bits_per_weight / 8 + embed * 2)


def kv_cache_bytes(model: ModelInfo, n_ctx: int, bytes_per_element: int = KV_BYTES_PER_ELEMENT) -> int:
    """2 (K and V) × layers × kv_heads × head_dim × tokens × bytes; sliding layers keep their window."""
    if not model.layers or not model.kv_heads or not model.head_dim:
        return 0
    per_token_layer = 2 * model.kv_heads * model.head_dim * bytes_per_element
    sliding = min(model.sliding_window_layers, model.layers) if model.sliding_window else 0
    window = min(n_ctx, model.sliding_window or n_ctx)
    return per_token_layer * ((model.layers - sliding) * n_ctx + sliding * window)


def overhead_bytes(model: ModelInfo, fmt: Format, n_ctx: int, device: str) -> int:
    """Runtime memory beyond weights and KV cache: compute buffers and the runtime itself."""
    hidden = model.hidden_size or 0
    inter = model.intermediate_size or 4 * hidden
    vocab = model.vocab_size or 0
    heads = model.attention_heads or 0
    runtime = "gguf" if fmt.family == "gguf" else "hf"
    base = _BASE_OVERHEAD[(runtime, "cuda" if device == "cuda" else "cpu")]
    if runtime == "gguf":
        ub = min(LLAMA_UBATCH, n_ctx)
        # f32 activations and attention scores of one micro-batch, and the last token's logits
        compute = ub * 4 * (4 * hidden + inter + heads * n_ctx) + 4 * vocab
        return base + compute
    activations = n_ctx * 2 * (4 * hidden + 2 * inter)  # one full-context prefill in 16-bit
    return base + activations + int(_ALLOCATOR_SLACK * weights_bytes(model, fmt))


def estimate(model: ModelInfo, fmt: Format, n_ctx: int, device: str = "cuda") -> Estimate:
    return Estimate(
        format=fmt.id,
        device=device,
        context=n_ctx,
        size_bytes=weights_bytes(model, fmt),
        kv_cache_bytes=kv_cache_bytes(model, n_ctx),
        overhead_bytes=overhead_bytes(model, fmt, n_ctx, device),
    )


@dataclass
class Split:
    """A GGUF model with ``gpu_layers`` of its layers on the GPU and the rest on the CPU."""

    gpu_layers: int
    layers: int
    gpu_bytes: int
    cpu_bytes: int


def gguf_split(model: ModelInfo, fmt: Format, n_ctx: int, vram_bytes: int, headroom: float = 0.9) -> Split:
    """How many repeating layers llama.cpp can offload into ``vram_bytes`` (``-ngl``), and the memory each side.

    Each offloaded layer carries its weights and its share of the KV cache; the GPU
    also holds the compute buffer. The embedding and output tensors stay on the CPU
    until every layer is offloaded.
    """
    layers = model.layers or 1
    size = weights_bytes(model, fmt)
    outer = int(_embedding_params(model) * fmt.bits_per_weight / 8)
    per_layer = (size - outer) / layers + kv_cache_bytes(model, n_ctx) / layers
    gpu_fixed = overhead_bytes(model, fmt, n_ctx, "cuda")
    room = vram_bytes * headroom - gpu_fixed
    n = max(0, min(layers, int(room // per_layer))) if per_layer > 0 else layers
    gpu_bytes = int(n * per_layer + (gpu_fixed if n else 0))
    cpu_bytes = int(outer + (layers - n) * per_layer + _BASE_OVERHEAD[("gguf", "cpu")])
    return Split(n, layers, gpu_bytes, cpu_bytes)


def gguf_gpu_layers(model: ModelInfo, fmt: Format, n_ctx: int, vram_bytes: int) -> int:
    return gguf_split(model, fmt, n_ctx, vram_bytes).gpu_layers
