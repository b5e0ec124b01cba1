"""A fast reader for a GGUF file's header: its key/value metadata and tensor shapes, not its weights.

``gguf.GGUFReader`` decodes every element of every array (a tokenizer's vocabulary
and merges: hundreds of thousands of items) into numpy views, which takes seconds
for a small model and tens of seconds for a Llama-3 vocabulary. Inspecting needs
only the scalars, the short per-layer arrays and the tensor shapes, so this reader
walks the header with ``struct`` over a memory map and records long arrays by
their length only.

Public API: ``read_gguf_header(path) -> GgufHeader``; raises QuantDeskError for a
file that is not GGUF or is cut short.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import QuantDeskError

MAGIC = b"GGUF"
_STRING, _ARRAY = 8, 9
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_KEEP_NUMBERS = 4096  # per-layer arrays are kept; longer numeric arrays are only counted
_KEEP_STRINGS = 256  # token lists and merges are only counted


@dataclass(frozen=True)
class LongArray:
    """An array too long to be worth decoding for inspection: its length only."""

    count: int


@dataclass
class GgufTensor:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the innermost dimension
    ggml_type: int

    @property
    def n_elements(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n


@dataclass
class GgufHeader:
    version: int
    fields: dict[str, Any] = field(default_factory=dict)
    tensors: list[GgufTensor] = field(default_factory=list)


class _Cursor:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos, self.size = buf, 0, len(buf)

    def unpack(self, fmt: str) -> Any:
        fmt = "<" + fmt
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise EOFError
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        length = self.unpack("Q")
        if self.pos + length > self.size:
            raise EOFError
        raw = self.buf[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise EOFError
        self.pos += n

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type, count = self.unpack("I"), self.unpack("Q")
            if item_type in _SCALARS:
                size = struct.calcsize(_SCALARS[item_type])
                if count > _KEEP_NUMBERS:
                    self.skip(count * size)
                    return LongArray(count)
                return list(self.unpack(f"{count}{_SCALARS[item_type]}")) if count else []
            if item_type == _STRING and count > _KEEP_STRINGS:
                for _ in range(count):
                    self.skip(self.unpack("Q"))
                return LongArray(count)
            return [self.value(item_type) for _ in range(count)]
        raise ValueError(f"unknown GGUF value type {vtype}")


def read_gguf_header(path: str | Path) -> GgufHeader:
    """Metadata and tensor shapes of a GGUF file, read without touching the weights."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            if fh.read(4) != MAGIC:
                raise QuantDeskError(f"{p} is not a GGUF file (it does not start with 'GGUF'); download it again.")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(buf)
    except QuantDeskError:
        raise
    except OSError as err:
        raise QuantDeskError(f"Cannot read {p}: {err.strerror or err}.") from None
    except (EOFError, ValueError, struct.error, OverflowError, MemoryError):
        raise QuantDeskError(f"{p} is a damaged or truncated GGUF file; download it again.") from None


def _parse(buf: mmap.mmap) -> GgufHeader:
    cur = _Cursor(buf)
    cur.skip(4)
    version = cur.unpack("I")
    if version == 1:
        n_tensors, n_kv = cur.unpack("I"), cur.unpack("I")
    else:
        n_tensors, n_kv = cur.unpack("Q"), cur.unpack("Q")
    header = GgufHeader(version)
    for _ in range(n_kv):
        key = cur.string()
        header.fields[key] = cur.value(cur.unpack("I"))
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("I")
        if n_dims > 8:
            raise ValueError("too many dimensions")
        shape = tuple(cur.unpack("Q") for _ in range(n_dims))
        ggml_type = cur.unpack("I")
        cur.unpack("Q")  # offset into the data section
        header.tensors.append(GgufTensor(name, shape, ggml_type))
    return header
