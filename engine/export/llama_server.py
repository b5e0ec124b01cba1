"""llama.cpp's ``llama-server`` command for a GGUF, sized for this machine.

The context is the one QuantDesk plans with (4096, or ``ctx``, never past what the
model was trained for); the GPU layers come from the same estimate the chat uses
(engine.chat.offload): every layer plus the output layer when it all fits, as many
as fit otherwise, none without a GPU.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_UNSET: Any = object()


@dataclass
class ServerCommand:
    gguf: Path
    context: int
    gpu_layers: int
    layers: int
    reason: str
    port: int = 8080
    installed: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def argv(self) -> list[str]:
        return ["llama-server", "-m", str(self.gguf), "-c", str(self.context), "-ngl", str(self.gpu_layers),
                "--host", "127.0.0.1", "--port", str(self.port)]

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    def to_dict(self) -> dict[str, Any]:
        return {"gguf": str(self.gguf), "context": self.context, "gpu_layers": self.gpu_layers, "layers": self.layers,
                "reason": self.reason, "port": self.port, "command": self.command,
                "llama_server_installed": self.installed, "notes": list(self.notes)}


def server_command(gguf: Path | str, *, ctx: int | None = None, free_vram: int | None = _UNSET,
                   port: int = 8080) -> ServerCommand:
    """The command line; ``free_vram`` (bytes, None for no GPU) defaults to what this machine has free."""
    from engine.chat.offload import free_vram_bytes, plan_gpu_layers
    from engine.estimate import context_for
    from engine.export.source import check_gguf
    from engine.inspect import inspect_model

    path = check_gguf(Path(gguf))
    model = inspect_model(path)
    n_ctx = context_for(model, ctx)
    notes: list[str] = []
    if ctx is not None and n_ctx < ctx:
        notes.append(f"The model was trained for {model.context_length} tokens, so the context is {n_ctx}.")
    vram = free_vram_bytes() if free_vram is _UNSET else free_vram
    layers = model.layers or 0
    if not vram:
        gpu_layers, reason = 0, "no NVIDIA GPU with free memory here, so every layer runs on the CPU"
    else:
        plan = plan_gpu_layers(path, n_ctx, vram)
        gpu_layers, reason = plan.gpu_layers, plan.reason
        if plan.gpu_layers >= layers > 0:
            gpu_layers = layers + 1  # llama.cpp counts the output layer as one more
        elif plan.gpu_layers < 0:
            gpu_layers = 999
    installed = shutil.which("llama-server") is not None
    if not installed:
        notes.append("llama-server is not on PATH: it comes with llama.cpp (github.com/ggml-org/llama.cpp releases, "
                     "brew install llama.cpp or winget install llama.cpp).")
    return ServerCommand(path, n_ctx, gpu_layers, layers, reason, port, installed, notes)
