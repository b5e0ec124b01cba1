"""How many of a GGUF's layers go on the GPU: all when they fit, fewer when not.

A simple estimate from the file itself: the weights are spread evenly over
the repeating layers (plus one layer's worth for embeddings and output), the
KV cache grows with the context, and a fixed reserve covers the CUDA context
and scratch buffers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import QuantDeskError

CUDA_INSTALL = 'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python'
_RESERVE_BYTES = 600 * 1024**2


@dataclass
class OffloadPlan:
    gpu_layers: int
    total_layers: int
    reason: str


def require_gpu_build() -> None:
    """Raise with the install command when llama-cpp-python was built for the CPU only."""
    from engine.hardware import llama_gpu_offload

    if not llama_gpu_offload():
        raise QuantDeskError(
            "The installed llama-cpp-python was built for the CPU only, so it cannot use the GPU; "
            f"install the CUDA build with: {CUDA_INSTALL} (or choose --device cpu)."
        )


def gguf_layout(path: Path) -> tuple[int, int, int]:
    """(repeating layers, KV-cache bytes per context token, training context) from the GGUF header."""
    from engine.gguf_header import read_gguf_header

    fields = read_gguf_header(path).fields
    arch = str(fields.get("general.architecture") or "llama")

    def num(key: str, default: int = 0) -> int:
        value = fields.get(f"{arch}.{key}")
        if isinstance(value, list):  # per-layer values
            value = max(value) if value else None
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default

    layers = num("block_count")
    embd = num("embedding_length")
    heads = num("attention.head_count", 1) or 1
    kv_heads = num("attention.head_count_kv", heads) or heads
    head_dim = num("attention.key_length", embd // heads)
    # K and V, f16 each, per layer.
    return layers, 2 * layers * kv_heads * head_dim * 2, num("context_length")


def plan_gpu_layers(path: Path, n_ctx: int, free_vram: int | None) -> OffloadPlan:
    """All layers when the model, its KV cache and a reserve fit in ``free_vram``; fewer otherwise."""
    layers, kv_per_token, _ = gguf_layout(path)
    if layers <= 0:
        return OffloadPlan(-1, 0, "the layer count is unknown, so every layer goes on the GPU")
    if free_vram is None:
        return OffloadPlan(layers, layers, "no GPU memory figure, so every layer goes on the GPU")
    size = path.stat().st_size
    per_layer = size / (layers + 1)
    kv = kv_per_token * n_ctx
    need = size + kv + _RESERVE_BYTES
    if need <= free_vram:
        return OffloadPlan(layers, layers, "the whole model fits in GPU memory")
    per_layer_with_kv = per_layer + kv / layers
    fit = int((free_vram - _RESERVE_BYTES - per_layer) // per_layer_with_kv)
    fit = max(0, min(layers, fit))
    return OffloadPlan(fit, layers, f"{fit} of {layers} layers fit in the free GPU memory; the rest run on the CPU")


def free_vram_bytes() -> int | None:
    from engine.hardware import detect_gpus

    gpus = detect_gpus()
    return max((g.vram_free_bytes for g in gpus), default=None)

