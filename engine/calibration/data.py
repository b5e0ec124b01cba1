"""Calibration texts: the project's own (chat, prose, code, other languages), a user's file, or both.

A document is either plain text or a conversation (a list of messages); a
conversation becomes text through the model's own chat template when it has
one (rendered in the guarded child of engine.chat.template), else as plain
"User: … / Assistant: …" lines. The built-in texts are written for the
project and share no passage with the evaluation texts (a test checks it).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.calibration.options import CalibrationOptions
from engine.errors import QuantDeskError

BUILTIN_FILES = ("chat.jsonl", "prose.txt", "code.txt", "languages.txt")
MAX_FILE_BYTES = 256 * 1024**2
_ROLES = ("system", "user", "assistant")
_FIX = "choose a UTF-8 .txt file or a .jsonl file with a \"text\" or \"messages\" field on every line"

Renderer = Callable[[list[dict[str, str]]], str]


@dataclass
class Document:
    kind: str  # chat, prose, code, languages, or "file"
    text: str | None = None
    messages: list[dict[str, str]] | None = None

    def render(self, renderer: Renderer | None) -> str:
        if self.messages is None:
            return self.text or ""
        if renderer is not None:
            return renderer(self.messages)
        return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in self.messages)


@dataclass
class Documents:
    items: list[Document]
    described: str  # e.g. "built-in texts (chat, prose, code, other languages) + notes.txt"
    files: list[dict[str, Any]] = field(default_factory=list)  # name, sha256, bytes of each user file

    @property
    def has_chat(self) -> bool:
        return any(d.messages is not None for d in self.items)


def builtin_path(name: str) -> Path:
    from engine.resources import resource_path

    return resource_path("calibration", name)


def builtin_documents() -> list[Document]:
    """The project's calibration texts, one document per conversation or paragraph block."""
    docs: list[Document] = []
    for name in BUILTIN_FILES:
        path = builtin_path(name)
        kind = name.split(".")[0]
        if name.endswith(".jsonl"):
            docs.extend(_jsonl_documents(path, path.read_text(encoding="utf-8"), kind))
        else:
            docs.extend(Document(kind, text=block) for block in _blocks(path.read_text(encoding="utf-8")))
    return docs


def load_documents(options: CalibrationOptions) -> Documents:
    """Every document ``options`` asks for, in a fixed shuffled order so each sample mixes kinds."""
    docs: list[Document] = []
    parts: list[str] = []
    files: list[dict[str, Any]] = []
    if options.uses_builtin:
        docs.extend(builtin_documents())
        parts.append("built-in texts (chat, prose, code, other languages)")
    if options.user_file is not None:
        path = Path(options.user_file).expanduser()
        raw = _read_user_file(path)
        text = _decode(path, raw)
        if path.suffix.lower() == ".jsonl":
            docs.extend(_jsonl_documents(path, text, "file"))
        else:
            docs.extend(Document("file", text=block) for block in _blocks(text))
        import hashlib

        files.append({"name": path.name, "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)})
        parts.append(path.name)
    random.Random(0).shuffle(docs)
    return Documents(docs, " + ".join(parts), files)


def _read_user_file(path: Path) -> bytes:
    import stat

    from engine.peek import special_kind

    try:
        info = path.stat()
    except FileNotFoundError:
        raise QuantDeskError(f"The calibration file {path} does not exist; check the path.") from None
    except OSError as err:
        raise QuantDeskError(f"Cannot read the calibration file {path} ({err.strerror}); check the path.") from None
    kind = special_kind(info.st_mode)
    if kind is not None:
        raise QuantDeskError(f"The calibration file {path} is {kind}; {_FIX}.")
    if info.st_size > MAX_FILE_BYTES:
        raise QuantDeskError(f"The calibration file {path.name} is larger than {MAX_FILE_BYTES // 1024**2} MB; "
                             "a few MB of text are plenty — use a smaller extract.")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise QuantDeskError(f"Cannot read the calibration file {path} ({err.strerror}); check the path.") from None
    if not stat.S_ISREG(info.st_mode) or len(raw) > MAX_FILE_BYTES:
        raise QuantDeskError(f"The calibration file {path.name} changed while it was read; try again.")
    return raw


def _decode(path: Path, raw: bytes) -> str:
    if b"\x00" in raw[:65536]:
        raise QuantDeskError(f"The calibration file {path.name} is binary, not text; {_FIX}.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise QuantDeskError(f"The calibration file {path.name} is not UTF-8 text; {_FIX}.") from None
    if not text.strip():
        raise QuantDeskError(f"The calibration file {path.name} is empty; {_FIX}.")
    return text


def _blocks(text: str, target: int = 4000) -> list[str]:
    """Paragraph groups of about ``target`` characters: documents that shuffle without cutting sentences."""
    blocks: list[str] = []
    current: list[str] = []
    size = 0
    for para in text.replace("\r\n", "\n").split("\n\n"):
        if not para.strip():
            continue
        current.append(para)
        size += len(para) + 2
        if size >= target:
            blocks.append("\n\n".join(current))
            current, size = [], 0
    if current:
        blocks.append("\n\n".join(current))
    return blocks


def _jsonl_documents(path: Path, text: str, kind: str) -> list[Document]:
    docs: list[Document] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number} of {path.name}"
        try:
            item = json.loads(line)
        except (ValueError, RecursionError):
            raise QuantDeskError(f"{where} is not valid JSON; {_FIX}.") from None
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            if item["text"].strip():
                docs.append(Document(kind, text=item["text"]))
            continue
        messages = item.get("messages") if isinstance(item, dict) else None
        if not isinstance(messages, list) or not messages or not all(_is_message(m) for m in messages):
            raise QuantDeskError(
                f"{where} has neither a \"text\" string nor \"messages\" as a list of {{\"role\": "
                f"system/user/assistant, \"content\": text}}; {_FIX}."
            )
        docs.append(Document(kind, messages=[{"role": m["role"], "content": m["content"]} for m in messages]))
    if not docs:
        raise QuantDeskError(f"The calibration file {path.name} has no text in it; {_FIX}.")
    return docs


def _is_message(m: Any) -> bool:
    return isinstance(m, dict) and m.get("role") in _ROLES and isinstance(m.get("content"), str)
