"""Calibration samples: the chosen texts as one token stream, cut into ``samples`` windows of ``seq_len``.

The windows are spread evenly over the whole stream, so every kind of text is
sampled, and they overlap only when the texts hold fewer tokens than
``samples × seq_len`` (recorded, and said in the job's log). As llama.cpp's
``llama-imatrix`` does, the first token of each window becomes BOS when the
model's tokenizer adds one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.calibration.data import Documents, load_documents
from engine.calibration.options import CalibrationOptions
from engine.errors import QuantDeskError


@dataclass
class Encoder:
    """A model's tokenizer as calibration needs it: text to ids (special tokens parsed, no BOS added)."""

    encode: Callable[[str], list[int]]
    bos_id: int | None
    add_bos: bool
    bos_text: str = ""
    eos_text: str = ""


@dataclass
class CalibrationSet:
    samples: list[list[int]]
    options: CalibrationOptions
    described: str
    stream_tokens: int  # tokens in the whole text stream the samples were cut from
    chat_template: bool  # conversations were rendered with the model's own chat template
    files: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def overlapping(self) -> bool:
        return self.stream_tokens < len(self.samples) * self.options.seq_len

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.samples)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for sample in self.samples:
            h.update(b",".join(str(t).encode() for t in sample) + b";")
        return h.hexdigest()

    def record(self) -> dict[str, Any]:
        """What a sidecar, a model card and a GGUF's metadata say about the calibration."""
        return {
            "data": self.described,
            "samples": len(self.samples),
            "seq_len": self.options.seq_len,
            "tokens": self.tokens,
            "stream_tokens": self.stream_tokens,
            "overlapping": self.overlapping,
            "chat_template": self.chat_template,
            "files": self.files,
            "sha256": self.fingerprint(),
        }


def hf_encoder(folder: Path) -> Encoder:
    """The tokenizer of a Hugging Face folder (never runs the folder's code)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    bos = tok.bos_token_id
    probe = tok("a").input_ids
    adds_bos = bos is not None and bool(probe) and probe[0] == bos

    def encode(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False).input_ids)

    return Encoder(encode, bos, adds_bos, tok.bos_token or "", tok.eos_token or "")


def build_calibration(options: CalibrationOptions, encoder: Encoder, *, chat_template: str | None,
                      model_name: str = "this model") -> CalibrationSet:
    """Load, render, tokenize and cut the calibration texts; one sentence for every unusable input."""
    docs = load_documents(options)
    warnings = _warnings(options, docs, chat_template, model_name)
    texts = _render(docs, encoder, chat_template)
    stream = encoder.encode("\n\n".join(texts))
    need = options.seq_len
    if len(stream) < need:
        what = f"The calibration file {docs.files[-1]['name']}" if docs.files and not options.uses_builtin \
            else "The calibration texts"
        raise QuantDeskError(
            f"{what} hold{'s' if docs.files and not options.uses_builtin else ''} only {len(stream)} tokens, "
            f"fewer than one sample of {need}; give a longer text or a shorter sequence length."
        )
    samples = _windows(stream, options.samples, need)
    if encoder.add_bos and encoder.bos_id is not None:
        for sample in samples:
            sample[0] = encoder.bos_id
    result = CalibrationSet(samples, options, docs.described, len(stream), chat_template is not None and
                            docs.has_chat, docs.files, warnings)
    if result.overlapping:
        result.warnings.append(
            f"The calibration texts hold {len(stream):,} tokens, fewer than {options.samples} samples × "
            f"{need}; the samples overlap (add a longer file for more variety)."
        )
    return result


def _windows(stream: list[int], count: int, length: int) -> list[list[int]]:
    span = len(stream) - length
    if count == 1 or span == 0:
        starts = [0] * count if span == 0 else [0]
    else:
        starts = [round(i * span / (count - 1)) for i in range(count)]
    return [list(stream[s:s + length]) for s in starts]


def _render(docs: Documents, encoder: Encoder, chat_template: str | None) -> list[str]:
    renderer = None
    if chat_template and docs.has_chat:
        from engine.chat.template import TemplateRenderer

        renderer = TemplateRenderer(chat_template)
    try:
        def render(messages: list[dict[str, str]]) -> str:
            assert renderer is not None
            text = renderer.render({"messages": messages, "bos_token": encoder.bos_text,
                                    "eos_token": encoder.eos_text, "add_generation_prompt": False})
            if encoder.bos_text and text.startswith(encoder.bos_text):
                text = text[len(encoder.bos_text):]  # BOS belongs at a sample's start, not mid-stream
            return text

        return [d.render(render if renderer is not None else None) for d in docs.items]
    finally:
        if renderer is not None:
            renderer.close()


def _warnings(options: CalibrationOptions, docs: Documents, chat_template: str | None, model_name: str) -> list[str]:
    if chat_template and options.user_file and not options.uses_builtin and not docs.has_chat:
        name = Path(options.user_file).name
        return [
            f"{model_name} is a chat model but {name} is plain text: calibrating a chat model on text that does "
            "not look like its conversations can cost quality; give a .jsonl with \"messages\" or mix in the "
            f"built-in chats with builtin+{name}."
        ]
    return []
