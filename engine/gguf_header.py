"""QuantDesk's one GGUF reader: metadata, tensor descriptions and where their data lies, never the weights.

A GGUF file comes from the internet, so everything in its header is untrusted:
every count, length and offset is checked against caps and against the file's
size before it is used, and anything malformed ends in one QuantDeskError
sentence (a file cut short is "damaged or truncated"). Every tensor's data,
computed from its ggml type's block size, must lie inside the file.

``gguf.GGUFReader`` decodes every element of every array (the tokenizer's
vocabulary and merges: hundreds of thousands of items) into numpy views; this
reader walks the header with ``struct`` over a memory map, keeps scalars and
short arrays, and records long arrays by their length only. It imports
nothing heavier than the standard library.

Public API: ``read_gguf_header(path) -> GgufHeader``; a damaged file raises ``DamagedGguf``
(a QuantDeskError whose ``reason`` says where).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import QuantDeskError
from engine.peek import open_regular

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# Caps on what a header may ask the reader to do; real files stay far below them.
MAX_KV = 65_536  # metadata keys (real files: a few dozen)
MAX_TENSORS = 1_048_576  # tensor descriptions (the largest MoE files: tens of thousands)
MAX_DIMS = 4  # ggml's GGML_MAX_DIMS
MAX_DEPTH = 3  # arrays nested in arrays
MAX_ARRAY = 16_777_216  # elements of one array (vocabularies: up to ~260k, merges ~500k)
MAX_KEY_BYTES = 65_535  # the format's own limit for a key
MAX_STRING_BYTES = 16 * 1024**2  # one string value (chat templates: tens of KB)
MAX_METADATA_BYTES = 512 * 1024**2  # the whole key/value section
MAX_KEPT_BYTES = 64 * 1024**2  # decoded values kept in memory
_KEEP_NUMBERS = 4096  # per-layer arrays are kept; longer numeric arrays are only counted
_KEEP_ITEMS = 256  # token lists, merges and nested arrays longer than this are only counted

_STRING, _ARRAY = 8, 9
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_SIZES = {t: struct.calcsize("<" + f) for t, f in _SCALARS.items()}
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")

# ggml type -> (elements per block, bytes per block): ggml's type traits (GGML_QUANT_SIZES in gguf-py).
GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17),
}


class _Damaged(Exception):
    """The header breaks the format or a cap; the text says where."""


class DamagedGguf(QuantDeskError):
    """A GGUF file that is cut short or malformed; ``reason`` says where, in a few words."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class LongArray:
    """An array too long to be worth decoding for inspection: its length only."""

    count: int


@dataclass(frozen=True)
class GgufTensor:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the innermost dimension
    ggml_type: int
    offset: int  # from the start of the data section
    n_bytes: int

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
    alignment: int = DEFAULT_ALIGNMENT
    data_offset: int = 0  # where the tensor data section starts in the file
    file_size: int = 0

    @property
    def file_type(self) -> int | None:
        """llama.cpp's file type (``general.file_type``), None when absent."""
        value = self.fields.get("general.file_type")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def parameters(self) -> int:
        return sum(t.n_elements for t in self.tensors)


class _Cursor:
    def __init__(self, buf: mmap.mmap | bytes) -> None:
        self.buf, self.pos, self.size = buf, 0, len(buf)
        self.kept = 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise EOFError(what)

    def u32(self) -> int:
        self.need(4, "a number")
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self) -> int:
        self.need(8, "a number")
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def scalar(self, vtype: int) -> Any:
        n = _SIZES[vtype]
        self.need(n, "a value")
        (v,) = struct.unpack_from("<" + _SCALARS[vtype], self.buf, self.pos)
        self.pos += n
        return v

    def string(self, cap: int, what: str) -> str:
        length = self.u64()
        if length > cap:
            raise _Damaged(f"{what} is {length} bytes long")
        self.need(length, what)
        self._keep(length)
        raw = bytes(self.buf[self.pos : self.pos + length])
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def _keep(self, n: int) -> None:
        self.kept += n
        if self.kept > MAX_KEPT_BYTES:
            raise _Damaged("its metadata is too large")

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.scalar(vtype)
        if vtype == _STRING:
            return self.string(MAX_STRING_BYTES, "a metadata string")
        if vtype == _ARRAY:
            return self.array(depth + 1)
        raise _Damaged(f"a metadata value has unknown type {vtype}")

    def array(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _Damaged("its metadata arrays are nested too deeply")
        item_type, count = self.u32(), self.u64()
        if count > MAX_ARRAY:
            raise _Damaged(f"a metadata array claims {count} elements")
        if item_type in _SCALARS:
            size = _SIZES[item_type]
            self.need(count * size, "an array")
            if count > _KEEP_NUMBERS:
                self.pos += count * size
                return LongArray(count)
            self._keep(count * size)
            values = list(struct.unpack_from(f"<{count}{_SCALARS[item_type]}", self.buf, self.pos))
            self.pos += count * size
            return values
        if item_type == _STRING:
            self.need(count * 8, "an array of strings")  # every string has at least its length
            if count > _KEEP_ITEMS:
                self._skip_strings(count)
                return LongArray(count)
            return [self.string(MAX_STRING_BYTES, "a metadata string") for _ in range(count)]
        if item_type == _ARRAY:
            self.need(count * 12, "an array of arrays")  # each holds at least its type and length
            if count > _KEEP_ITEMS:
                raise _Damaged(f"a metadata array holds {count} arrays")
            return [self.array(depth + 1) for _ in range(count)]
        raise _Damaged(f"a metadata array has unknown element type {item_type}")

    def _skip_strings(self, count: int) -> None:
        """Step over ``count`` strings by their lengths alone (a vocabulary: no decoding)."""
        unpack, buf, pos, size = _U64.unpack_from, self.buf, self.pos, self.size
        for _ in range(count):
            if pos + 8 > size:
                raise EOFError("a string")
            pos += 8 + unpack(buf, pos)[0]
        if pos > size:
            raise EOFError("a string")
        self.pos = pos


def read_gguf_header(path: str | Path) -> GgufHeader:
    """Metadata, tensor descriptions and data layout of a GGUF file, checked against its size."""
    p = Path(path)
    try:
        with open_regular(p) as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            if fh.read(4) != MAGIC:
                raise QuantDeskError(f"{p} is not a GGUF file (it does not start with 'GGUF'); download it again.")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return parse_gguf_header(buf, size, p)
    except QuantDeskError:
        raise
    except OSError as err:
        raise QuantDeskError(f"Cannot read {p}: {err.strerror or err}.") from None
    except (ValueError, OverflowError, MemoryError):
        raise _damaged(p, "its header cannot be read") from None


def parse_gguf_header(buf: mmap.mmap | bytes, file_size: int, path: Path) -> GgufHeader:
    """The header held in ``buf`` (the whole file, or at least its header); QuantDeskError if damaged."""
    try:
        return _parse(_Cursor(buf), file_size, path)
    except QuantDeskError:
        raise
    except EOFError as err:
        raise _damaged(path, f"it ends inside {err}") from None
    except _Damaged as err:
        raise _damaged(path, str(err)) from None
    except (ValueError, struct.error, OverflowError, MemoryError, IndexError):
        raise _damaged(path, "its header cannot be read") from None


def _damaged(path: Path, why: str) -> DamagedGguf:
    return DamagedGguf(f"{path.name} is a damaged or truncated GGUF file ({why}); download or quantize it again.", why)


def _parse(cur: _Cursor, file_size: int, path: Path) -> GgufHeader:
    cur.need(4, "the header")
    cur.pos = 4
    version = cur.u32()
    if version == 1:
        raise QuantDeskError(f"{path.name} is a GGUF version 1 file, which llama.cpp no longer reads; "
                             "convert the model again.")
    if version not in (2, 3):
        if version & 0xFFFF == 0 and version >> 16:
            raise QuantDeskError(f"{path.name} is a big-endian GGUF file; use the little-endian download.")
        if version == 0:
            raise _Damaged("its version is 0")
        raise QuantDeskError(f"{path.name} is GGUF version {version}, newer than QuantDesk reads; update QuantDesk.")
    n_tensors, n_kv = cur.u64(), cur.u64()
    if n_kv > MAX_KV:
        raise _Damaged(f"it claims {n_kv} metadata keys")
    if n_tensors > MAX_TENSORS:
        raise _Damaged(f"it claims {n_tensors} tensors")
    header = GgufHeader(version, file_size=file_size)
    start = cur.pos
    for _ in range(n_kv):
        key = cur.string(MAX_KEY_BYTES, "a metadata key")
        if key in header.fields:
            raise _Damaged(f"the key {key[:60]!r} appears twice")
        header.fields[key] = cur.value(cur.u32())
        if cur.pos - start > MAX_METADATA_BYTES:
            raise _Damaged("its metadata is too large")
    cur.need(n_tensors * 24, "the tensor list")  # name length, dimension count, type and offset at least
    names: set[str] = set()
    raw: list[tuple[str, tuple[int, ...], int, int]] = []
    for _ in range(n_tensors):
        name = cur.string(MAX_KEY_BYTES, "a tensor name")
        if name in names:
            raise _Damaged(f"the tensor {name[:60]!r} appears twice")
        names.add(name)
        n_dims = cur.u32()
        if n_dims > MAX_DIMS:
            raise _Damaged(f"the tensor {name[:60]!r} has {n_dims} dimensions")
        shape = tuple(cur.u64() for _ in range(n_dims))
        raw.append((name, shape, cur.u32(), cur.u64()))
    header.alignment = _alignment(header.fields)
    header.data_offset = -(-cur.pos // header.alignment) * header.alignment
    header.tensors = [_tensor(header, *item) for item in raw]
    return header


def _alignment(fields: dict[str, Any]) -> int:
    value = fields.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value & (value - 1):
        raise _Damaged(f"its alignment {value!r} is not a power of two")
    return value


def _tensor(header: GgufHeader, name: str, shape: tuple[int, ...], ggml_type: int, offset: int) -> GgufTensor:
    """A tensor whose data is checked to lie inside the file; its size comes from its type's block size."""
    label = repr(name[:60])
    n = 1
    for dim in shape:
        n *= dim
    if n >= 2**63:
        raise _Damaged(f"the tensor {label} claims {n} elements")
    if offset % header.alignment:
        raise _Damaged(f"the tensor {label} is not aligned")
    block = GGML_BLOCKS.get(ggml_type)
    if block is None:  # a type newer than this table: its start must still be inside the file
        n_bytes = 0
    else:
        elements, nbytes = block
        if shape and shape[0] % elements:
            raise _Damaged(f"the tensor {label} has rows that are not whole blocks of its type")
        n_bytes = n // elements * nbytes
    if header.data_offset + offset + n_bytes > header.file_size:
        raise _Damaged(f"the tensor {label} runs past the end of the file")
    return GgufTensor(name, shape, ggml_type, offset, n_bytes)
