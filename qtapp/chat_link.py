"""A chat pane's hold on one loaded engine Chat: load on first use, switch models, send, stop.

The work functions here run on the bridge's worker threads (``qtapp.workers``);
the engine does the loading, templating, streaming and timing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.jobs import CancelToken


class PaneChat:
    """The engine's ChatSlot for one pane, plus which model and device it holds."""

    def __init__(self) -> None:
        from engine.chat.factory import ChatSlot

        self.slot = ChatSlot()
        self.key: tuple[str, str] | None = None

    def reply_work(self, key: tuple[str, str], prompt: str, system: str, sampling: dict[str, Any]):
        """Work for the bridge: switch when the model or device changed, then stream the reply."""

        def work(cancel: CancelToken):
            from engine.chat import Sampling

            settings = Sampling(**sampling)
            if self.slot.chat is None or self.key != key:
                self.key = None
                yield from self.slot.switch(Path(key[0]), cancel, device=key[1])
                self.key = key
            self.slot.chat.system_prompt = system or None
            reply = yield from self.slot.chat.send(prompt, settings, cancel)
            return reply

        return work

    def forget(self) -> None:
        """A new chat: the loaded model stays, the conversation goes."""
        if self.slot.chat is not None:
            self.slot.chat.reset()

    def close(self) -> None:
        self.key = None
        self.slot.close()


def stats_line(reply: Any) -> str:
    """Tokens per second and friends, under each reply."""
    if reply is None:
        return "stopped"
    parts = []
    if getattr(reply, "tokens_per_second", None):
        parts.append(f"{reply.tokens_per_second:.1f} tokens/s")
    tokens = getattr(reply, "tokens", 0)
    parts.append(f"{tokens} token" if tokens == 1 else f"{tokens} tokens")
    if getattr(reply, "time_to_first_token_s", None) is not None:
        parts.append(f"first token after {reply.time_to_first_token_s:.2f} s")
    if getattr(reply, "finish_reason", "") == "cancelled":
        parts.append("stopped")
    elif getattr(reply, "finish_reason", "") == "length":
        parts.append("reached the length limit")
    return " · ".join(parts)
