"""Chat with any result: GGUF through llama.cpp, Hugging Face folders through transformers."""

from __future__ import annotations

from engine.chat.base import NO_TEMPLATE_NOTICE, Chat, Reply, Sampling
from engine.chat.factory import ChatSlot, open_chat

__all__ = ["NO_TEMPLATE_NOTICE", "Chat", "ChatSlot", "Reply", "Sampling", "open_chat"]
