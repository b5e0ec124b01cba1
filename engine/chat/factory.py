"""Pick the chat backend from what the path is, and hold one model at a time."""

from __future__ import annotations

from pathlib import Path

from engine.chat.base import Chat
from engine.errors import QuantDeskError
from engine.jobs import CancelToken, JobGen


def model_kind(path: Path) -> str:
    """"gguf" for a GGUF file, "hf" for a Hugging Face folder; raises for anything else."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf"
        ggufs = sorted(path.glob("*.gguf"))
        hint = f" (it holds {ggufs[0].name}: point at that file)" if ggufs else ""
        raise QuantDeskError(f"{path} is not a Hugging Face model folder: it has no config.json{hint}.")
    if path.exists():
        from engine.peek import read_head

        if path.suffix.lower() == ".gguf" or read_head(path, 4) == b"GGUF":
            return "gguf"
        raise QuantDeskError(f"{path.name} is neither a .gguf file nor a model folder; choose one of those.")
    raise QuantDeskError(f"{path} does not exist; check the path.")


def open_chat(
    path: Path | str,
    *,
    device: str = "cpu",
    gpu_layers: int | None = None,
    n_ctx: int | None = None,
    threads: int | None = None,
    system_prompt: str | None = None,
) -> Chat:
    """A chat for ``path`` (not loaded yet: drive ``chat.load(cancel)``, e.g. with run_job)."""
    path = Path(path).expanduser()
    kind = model_kind(path)
    common = {"device": device, "n_ctx": n_ctx, "threads": threads, "system_prompt": system_prompt,
              "gpu_layers": gpu_layers}
    if kind == "gguf":
        from engine.chat.llama_cpp import LlamaCppChat

        return LlamaCppChat(path, **common)
    from engine.chat.transformers import TransformersChat

    return TransformersChat(path, **common)


class ChatSlot:
    """The one model the chat pane talks to: switching frees the previous model first."""

    def __init__(self) -> None:
        self.chat: Chat | None = None

    def switch(self, path: Path | str, cancel: CancelToken | None = None, **options: object) -> JobGen[Chat]:
        chat = open_chat(path, **options)  # type: ignore[arg-type]
        self.close()
        loaded = yield from chat.load(cancel)
        self.chat = loaded
        return loaded

    def close(self) -> None:
        if self.chat is not None:
            self.chat.close()
            self.chat = None
