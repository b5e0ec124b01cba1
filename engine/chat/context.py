"""Whether a context size suits a model and this machine, asked before anything is allocated.

``quantdesk chat --ctx``, ``quantdesk eval --ctx`` and the chat pane all come
here; a context above the model's own or beyond the free memory is refused
with one sentence that names the largest that fits.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import QuantDeskError


def free_memory_bytes(device: str) -> int | None:
    """Memory a new context can take: available RAM, plus the free VRAM of the best GPU for cuda."""
    try:
        import psutil

        free = int(psutil.virtual_memory().available)
    except (ImportError, OSError):
        return None
    if device == "cuda":
        from engine.chat.offload import free_vram_bytes

        free += free_vram_bytes() or 0
    return free


def check_model_context(path: Path, n_ctx: int, device: str = "cpu", *, all_logits: bool = False,
                        option: str = "--ctx") -> int:
    """``n_ctx`` if ``path`` (a GGUF file or a Hugging Face folder) can hold it here; else QuantDeskError.

    GGUF weights are memory-mapped by llama.cpp and need no free memory of their
    own; a Hugging Face model's weights are loaded, so they count.
    """
    from engine.estimate import check_context
    from engine.inspect import inspect_model

    if n_ctx < 1:
        raise QuantDeskError(f"The context must be at least 1 token (got {n_ctx}); try {option} 4096.")
    model = inspect_model(Path(path).expanduser())
    resident = 0 if model.kind == "gguf" else model.bytes_on_disk
    return check_context(model, n_ctx, free_memory_bytes(device), resident_bytes=resident,
                         all_logits=all_logits, option=option)
