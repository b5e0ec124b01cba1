"""Which of a repository's files QuantDesk needs, from the file list alone.

Safetensors weights (the shards the index names, else ``model.safetensors``, else
every top-level ``.safetensors``), config, tokenizer and chat-template files and the
generation config. Pickle ``.bin`` weights, other frameworks' copies, subfolders
(``original/``, ``onnx/``), images and code are left out: remote code never runs here.
"""

from __future__ import annotations

import re

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
SUPPORT = frozenset({
    CONFIG, "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "vocab.txt", "spiece.model",
    "tiktoken.model", "chat_template.jinja", "chat_template.json",
})
_PICKLE = re.compile(r"\.(bin|pt|pth|ckpt)$", re.I)
_PICKLE_SKIP = ("training_args", "optimizer", "scheduler", "rng_state")


def top_level(names: list[str]) -> list[str]:
    return [n for n in names if "/" not in n]


def safetensors_files(names: list[str], index_shards: list[str] | None = None) -> list[str]:
    """The weight files to download; ``index_shards`` are the files the index's weight_map names."""
    top = top_level(names)
    if index_shards:
        return sorted(set(index_shards))
    if SINGLE in top:
        return [SINGLE]
    return sorted(n for n in top if n.endswith(".safetensors"))


def pickle_files(names: list[str]) -> list[str]:
    return sorted(n for n in top_level(names) if _PICKLE.search(n) and not n.startswith(_PICKLE_SKIP))


def gguf_files(names: list[str]) -> list[str]:
    return sorted(n for n in names if n.lower().endswith(".gguf"))


def support_files(names: list[str]) -> list[str]:
    """Config, tokenizer, chat template and generation config, plus the shard index when there is one."""
    top = top_level(names)
    return sorted(n for n in top if n in SUPPORT or n == INDEX)
