"""GGUF files written byte by byte with ``struct``, independent of any reader, for crafted-header tests.

``build_gguf`` takes metadata as (key, type, value) and tensors as (name, shape,
ggml type, bytes of data) and lays them out as the format says: header, key/values,
tensor infos, padding to the alignment, then each tensor's data aligned.
"""

from __future__ import annotations

import struct
from typing import Any

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_FMT = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q", I64: "q",
        F64: "d"}


def string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def value(vtype: int, v: Any) -> bytes:
    if vtype == STRING:
        return string(v)
    if vtype == ARRAY:
        item_type, items = v
        return struct.pack("<IQ", item_type, len(items)) + b"".join(value(item_type, i) for i in items)
    if vtype not in _FMT:  # an unknown type: its value is raw bytes
        return bytes(v) if not isinstance(v, int) else v.to_bytes(4, "little")
    return struct.pack("<" + _FMT[vtype], v)


def build_gguf(
    kv: list[tuple[str, int, Any]],
    tensors: list[tuple[str, tuple[int, ...], int, int]],
    *,
    version: int = 3,
    alignment: int = 32,
) -> bytes:
    """A whole GGUF file; tensor data is filled with a byte pattern."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kv)))
    for key, vtype, v in kv:
        out += string(key) + struct.pack("<I", vtype) + value(vtype, v)
    offset = 0
    offsets = []
    for _name, _shape, _gtype, nbytes in tensors:
        offsets.append(offset)
        offset += -(-nbytes // alignment) * alignment
    for (name, shape, gtype, _nbytes), off in zip(tensors, offsets, strict=True):
        out += string(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", gtype, off)
    out += b"\0" * (-len(out) % alignment)
    for (_name, _shape, _gtype, nbytes), off in zip(tensors, offsets, strict=True):
        out += bytes((i * 7 + off) % 251 for i in range(nbytes))
        out += b"\0" * (-len(out) % alignment)
    return bytes(out)


def sample_gguf() -> bytes:
    """A small but complete llama-style GGUF: scalars, a chat template, a long vocabulary, nested arrays."""
    vocab = [f"tok{i}" for i in range(300)]
    kv = [
        ("general.architecture", STRING, "llama"),
        ("general.name", STRING, "crafted"),
        ("general.file_type", U32, 1),
        ("llama.context_length", U32, 2048),
        ("llama.block_count", U32, 2),
        ("llama.embedding_length", U32, 32),
        ("llama.attention.head_count", U32, 4),
        ("llama.rope.freq_base", F32, 10000.0),
        ("llama.attention.layer_norm_rms_epsilon", F64, 1e-5),
        ("general.flags", ARRAY, (BOOL, [True, False])),
        ("llama.per_layer", ARRAY, (I32, [1, 2])),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, vocab)),
        ("tokenizer.ggml.scores", ARRAY, (F32, [0.0] * 300)),
        ("tokenizer.nested", ARRAY, (ARRAY, [(U8, [1, 2]), (STRING, ["a", "b"])])),
        ("tokenizer.chat_template", STRING, "{% for m in messages %}{{ m['content'] }}{% endfor %}"),
    ]
    tensors = [
        ("token_embd.weight", (32, 300), 1, 32 * 300 * 2),
        ("blk.0.attn_norm.weight", (32,), 0, 32 * 4),
        ("blk.0.attn_q.weight", (32, 32), 8, 32 * 32 // 32 * 34),
        ("blk.1.ffn_down.weight", (256, 4), 12, 4 * 144),
    ]
    return build_gguf(kv, tensors)
