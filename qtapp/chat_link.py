"""A chat pane's hold on one loaded engine Chat: load on first use, switch models, send, stop.

The work functions here run on the bridge's worker threads (``qtapp.workers``);
the engine does the loading, templating, streaming and timing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.jobs import CancelToken


class ChatSlot:
    """The model loaded for one pane; switching models frees the previous one."""

    def __init__(self) -> None:
        self.chat: Any = None
        self.key: tuple[str, str] | None = None

    def reply_work(self, key: tuple[str, str], prompt: str, system: str, sampling: dict[str, Any]):
        """Work for the bridge: (re)load when the model or device changed, then stream the reply."""

        def work(cancel: CancelToken):
            from engine.chat import open_chat
            from engine.chat.base import Sampling

            settings = Sampling(**sampling)
            if self.chat is None or self.key != key:
                self.close()
                self.chat = open_chat(Path(key[0]), device=key[1])
                yield from self.chat.load(cancel)
                self.key = key
            self.chat.system_prompt = system or None
            reply = yield from self.chat.send(prompt, settings, cancel)
            return reply

        return work

    def close(self) -> None:
        chat, self.chat, self.key = self.chat, None, None
        if chat is not None:
            chat.close()


def stats_line(reply: Any) -> str:
    """Tokens per second and friends, under each reply."""
    if reply is None:
        return "stopped"
    parts = []
    if getattr(reply, "tokens_per_second", None):
        parts.append(f"{reply.tokens_per_second:.1f} tokens/s")
    parts.append(f"{getattr(reply, 'tokens', 0)} tokens")
    if getattr(reply, "time_to_first_token_s", None) is not None:
        parts.append(f"first token after {reply.time_to_first_token_s:.2f} s")
    if getattr(reply, "finish_reason", "") == "cancelled":
        parts.append("stopped")
    elif getattr(reply, "finish_reason", "") == "length":
        parts.append("reached the length limit")
    return " · ".join(parts)
