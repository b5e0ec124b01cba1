"""llama.cpp's importance-matrix files, both forms: read, checked, and written.

GGUF form (what ``llama-imatrix`` writes today): ``general.type = "imatrix"``,
``imatrix.datasets`` (strings), ``imatrix.chunk_count`` and
``imatrix.chunk_size`` (u32); per weight ``<name>.in_sum2`` (float32, one row
of per-column sums of x² per expert) and ``<name>.counts`` (float32, tokens
per expert). The weights llama.cpp quantizes with are in_sum2 / counts.

Legacy ``.dat`` form: int32 entry count; per entry int32 name length, the
name, int32 ``ncall``, int32 value count, float32 values (each mean × ncall);
then optionally int32 chunk count and int32 length + dataset name. The
weights are values / ncall.

Files come from the user, so every count and length is checked against the
file's size and against caps before it is used; anything malformed is one
sentence.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import QuantDeskError

MAX_FILE_BYTES = 4 * 1024**3  # the largest MoE imatrix files are a few hundred MB
MAX_ENTRIES = 1_048_576
MAX_NAME_BYTES = 1024
MAX_VALUES = 64 * 1024**2  # floats in one entry
GGUF_MAGIC = b"GGUF"
SOURCE_KEY = "quantdesk.imatrix.source_sha256"  # the source weights it was computed from
CALIBRATION_KEY = "quantdesk.imatrix.calibration_sha256"  # the calibration tokens it was computed on
_F32 = 0  # ggml type of both tensors


@dataclass
class Entry:
    """One weight's statistics: ``sums`` is (experts, columns), ``counts`` is (experts,)."""

    sums: np.ndarray
    counts: np.ndarray

    def weights(self) -> np.ndarray:
        """What llama.cpp quantizes with: the mean of x² per column (1 where an expert saw no token)."""
        counts = self.counts.astype(np.float32)[:, None]
        safe = np.where(counts > 0, counts, 1.0)
        mean = np.where(counts > 0, self.sums / safe, 1.0)
        return np.ascontiguousarray(mean.reshape(-1), dtype=np.float32)


@dataclass
class ImatrixData:
    entries: dict[str, Entry]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    meta: dict[str, str] = field(default_factory=dict)  # QuantDesk's own keys (fingerprints)
    legacy: bool = False


def _bad(path: Path, why: str) -> QuantDeskError:
    return QuantDeskError(
        f"{path.name} is not a usable importance matrix ({why}); give a file written by llama-imatrix "
        "(.gguf or legacy .dat) or use --imatrix auto."
    )


def read_imatrix(path: str | Path) -> ImatrixData:
    """Either form, recognised by its first bytes; one sentence for a missing, damaged or foreign file."""
    path = Path(path).expanduser()
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise QuantDeskError(f"The importance matrix {path} does not exist; check the path given to --imatrix.") \
            from None
    except OSError as err:
        raise QuantDeskError(f"Cannot read the importance matrix {path} ({err.strerror}); check the path.") from None
    if not path.is_file():
        raise _bad(path, "it is not a regular file")
    if size > MAX_FILE_BYTES:
        raise _bad(path, f"larger than {MAX_FILE_BYTES // 1024**3} GB")
    with path.open("rb") as f:
        magic = f.read(4)
    data = _read_gguf(path) if magic == GGUF_MAGIC else _read_legacy(path, size)
    if not data.entries:
        raise _bad(path, "it holds no entries")
    return data


def _read_gguf(path: Path) -> ImatrixData:
    from engine.gguf_header import read_gguf_header

    try:
        header = read_gguf_header(path)
    except QuantDeskError as err:
        raise _bad(path, f"damaged GGUF: {getattr(err, 'reason', err)}") from None
    kind = header.fields.get("general.type")
    if kind != "imatrix":
        what = "a model" if kind in (None, "model") else f"of type {kind!r}"
        raise _bad(path, f"this GGUF is {what}, not an importance matrix")
    tensors = {t.name: t for t in header.tensors}
    entries: dict[str, Entry] = {}
    with path.open("rb") as f:
        for name, t in tensors.items():
            if not name.endswith(".in_sum2"):
                continue
            base = name[: -len(".in_sum2")]
            counts_t = tensors.get(base + ".counts")
            if counts_t is None:
                raise _bad(path, f"{base} has sums but no counts")
            if t.ggml_type != _F32 or counts_t.ggml_type != _F32:
                raise _bad(path, f"{base} is not stored as float32")
            n_mat = counts_t.n_elements
            if n_mat < 1 or t.n_elements % n_mat or t.n_elements > MAX_VALUES:
                raise _bad(path, f"{base} has {t.n_elements} sums for {n_mat} counts")
            sums = _floats(f, header.data_offset + t.offset, t.n_elements).reshape(n_mat, -1)
            counts = _floats(f, header.data_offset + counts_t.offset, n_mat)
            if not (np.isfinite(sums).all() and np.isfinite(counts).all()) or (counts < 0).any():
                raise _bad(path, f"{base} holds values that are not finite or negative counts")
            entries[base] = Entry(sums, counts)
    datasets = header.fields.get("imatrix.datasets")
    meta = {k: v for k, v in header.fields.items() if k.startswith("quantdesk.") and isinstance(v, str)}
    return ImatrixData(entries, [d for d in datasets if isinstance(d, str)] if isinstance(datasets, list) else [],
                       _int(header.fields.get("imatrix.chunk_count")), _int(header.fields.get("imatrix.chunk_size")),
                       meta)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _floats(f, offset: int, count: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    f.seek(offset)
    return np.frombuffer(f.read(4 * count), dtype="<f4", count=count).astype(np.float32)


class _Reader:
    def __init__(self, raw: bytes, path: Path) -> None:
        self.raw, self.pos, self.path = raw, 0, path

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.raw):
            raise _bad(self.path, f"cut short while reading {what}")
        out = self.raw[self.pos:self.pos + n]
        self.pos += n
        return out

    def i32(self, what: str) -> int:
        return int(struct.unpack("<i", self.take(4, what))[0])

    @property
    def left(self) -> int:
        return len(self.raw) - self.pos


def _read_legacy(path: Path, size: int) -> ImatrixData:
    raw = path.read_bytes()
    r = _Reader(raw, path)
    n = r.i32("the entry count")
    if not 0 < n <= MAX_ENTRIES or n * 12 > size:
        raise _bad(path, "neither a GGUF nor a legacy .dat file")
    entries: dict[str, Entry] = {}
    for i in range(n):
        length = r.i32(f"entry {i + 1}'s name")
        if not 0 < length <= MAX_NAME_BYTES:
            raise _bad(path, f"entry {i + 1} has a name of {length} bytes")
        try:
            name = r.take(length, f"entry {i + 1}'s name").decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(path, f"entry {i + 1}'s name is not text") from None
        ncall = r.i32(f"{name}'s call count")
        nval = r.i32(f"{name}'s value count")
        if not 0 < nval <= MAX_VALUES or 4 * nval > r.left:
            raise _bad(path, f"{name} claims {nval} values")
        values = np.frombuffer(r.take(4 * nval, f"{name}'s values"), dtype="<f4").astype(np.float32)
        if not np.isfinite(values).all():
            raise _bad(path, f"{name} holds values that are not finite")
        # values are mean × ncall: keep them as sums over ``ncall`` "tokens" so weights() divides back
        entries[name] = Entry(values.reshape(1, -1), np.array([float(max(ncall, 0)) or 1.0], dtype=np.float32))
    chunks, datasets = 0, []
    if r.left >= 4:
        chunks = r.i32("the chunk count")
        if r.left >= 4:
            length = r.i32("the dataset name")
            if 0 <= length <= min(r.left, 65536):
                datasets = [r.take(length, "the dataset name").decode("utf-8", errors="replace")]
    return ImatrixData(entries, datasets, max(chunks, 0), 0, legacy=True)


def write_gguf_imatrix(path: Path, data: ImatrixData) -> None:
    """llama.cpp's GGUF form, entries in name order, with QuantDesk's keys beside llama.cpp's."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="", endianess=gguf.GGUFEndian.LITTLE)
    writer.add_type(gguf.GGUFType.IMATRIX)
    writer.add_array(gguf.Keys.IMatrix.DATASETS, list(data.datasets))
    writer.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, int(data.chunk_count))
    writer.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, int(data.chunk_size))
    for key, value in sorted(data.meta.items()):
        writer.add_string(key, value)
    for name in sorted(data.entries):
        entry = data.entries[name]
        writer.add_tensor(f"{name}.in_sum2", np.ascontiguousarray(entry.sums, dtype=np.float32))
        writer.add_tensor(f"{name}.counts", np.ascontiguousarray(entry.counts.reshape(-1, 1), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_legacy_imatrix(path: Path, data: ImatrixData) -> None:
    """The legacy ``.dat`` form (as ``llama-imatrix --output-format dat`` writes it)."""
    chunk_size = max(1, data.chunk_size)
    out = bytearray(struct.pack("<i", len(data.entries)))
    for name in sorted(data.entries):
        entry = data.entries[name]
        raw = name.encode("utf-8")
        ncall = max(1, int(-(-float(entry.counts.max()) // chunk_size)))
        values = entry.weights() * np.float32(ncall)
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, values.size)
        out += values.astype("<f4").tobytes()
    dataset = (data.datasets[-1] if data.datasets else "").encode("utf-8")
    out += struct.pack("<i", int(data.chunk_count)) + struct.pack("<i", len(dataset)) + dataset
    path.write_bytes(bytes(out))
