"""How many of a GGUF's layers go on the GPU: all when they fit, fewer when not."""

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
    from engine.estimate import kv_cache_bytes
    from engine.inspect import inspect_model

    model = inspect_model(path)
    return model.layers or 0, kv_cache_bytes(model, 1), model.context_length or 0


def plan_gpu_layers(path: Path, n_ctx: int, free_vram: int | None) -> OffloadPlan:
    """All layers when the model, its KV cache and buffers fit in ``free_vram``; fewer otherwise.

    Uses the project's memory estimate (engine.estimate) when the file's type is
    one it knows, else a split of the file size evenly over the layers.
    """
    layers, kv_per_token, _ = gguf_layout(path)
    if layers <= 0:
        return OffloadPlan(-1, 0, "the layer count is unknown, so every layer goes on the GPU")
    if free_vram is None:
        return OffloadPlan(layers, layers, "no GPU memory figure, so every layer goes on the GPU")
    fit = _estimated_layers(path, n_ctx, free_vram)
    if fit is None:
        size = path.stat().st_size
        per_layer = size / (layers + 1)
        if size + kv_per_token * n_ctx + _RESERVE_BYTES <= free_vram:
            fit = layers
        else:
            per_layer_with_kv = per_layer + kv_per_token * n_ctx / layers
            fit = int((free_vram - _RESERVE_BYTES - per_layer) // per_layer_with_kv)
    fit = max(0, min(layers, fit))
    if fit == layers:
        return OffloadPlan(layers, layers, "the whole model fits in GPU memory")
    return OffloadPlan(fit, layers, f"{fit} of {layers} layers fit in the free GPU memory; the rest run on the CPU")


def _estimated_layers(path: Path, n_ctx: int, free_vram: int) -> int | None:
    from engine.estimate import gguf_gpu_layers
    from engine.formats import FORMATS
    from engine.inspect import inspect_model

    try:
        model = inspect_model(path)
    except QuantDeskError:
        return None
    fmt = FORMATS.get(f"gguf:{model.dtype}") if model.dtype else None
    if fmt is None or not model.layers:
        return None
    return gguf_gpu_layers(model, fmt, n_ctx, free_vram)


def free_vram_bytes() -> int | None:
    from engine.hardware import detect_gpus

    gpus = detect_gpus()
    return max((g.vram_free_bytes for g in gpus), default=None)

