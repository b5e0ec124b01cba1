"""A finished-looking GGUF is only renamed into place once the gguf reader agrees it is whole.

The reader parses the header, every metadata key, every tensor's description
and maps every tensor's data (a file cut short fails there). It would also
unpack each of the ~100k vocabulary strings one numpy view at a time, which
costs seconds per file and tells nothing about completeness, so arrays are
stepped over by their byte length instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import QuantDeskError


def _reader_class() -> Any:
    import numpy as np
    from gguf import GGUFReader, GGUFValueType

    class HeaderReader(GGUFReader):
        """GGUFReader that keeps array metadata as (item type, length) without unpacking the items."""

        def _get_field_parts(self, orig_offs: int, raw_type: int) -> Any:
            if GGUFValueType(raw_type) != GGUFValueType.ARRAY:
                return super()._get_field_parts(orig_offs, raw_type)
            raw_itype = self._get(orig_offs, np.uint32)
            alen = self._get(orig_offs + 4, np.uint64)
            itype, n, offs = GGUFValueType(int(raw_itype[0])), int(alen[0]), orig_offs + 12
            scalar = self.gguf_scalar_to_np.get(itype)
            if scalar is not None:
                offs += n * np.dtype(scalar).itemsize
            elif itype == GGUFValueType.STRING:
                raw = memoryview(self.data)
                for _ in range(n):
                    offs += 8 + int.from_bytes(raw[offs:offs + 8], "little")
            else:  # nested arrays: rare and small, let the reader walk them
                return super()._get_field_parts(orig_offs, raw_type)
            if offs > len(self.data):
                raise ValueError("metadata array runs past the end of the file")
            return offs - orig_offs, [raw_itype, alen], [], [GGUFValueType.ARRAY, itype]

    return HeaderReader


def open_gguf_header(path: Path) -> Any:
    """A gguf.GGUFReader of ``path`` whose array metadata (vocabulary) is left unpacked: fast."""
    return _reader_class()(path)


def read_gguf_facts(path: Path) -> tuple[int, int | None, int]:
    """(tensor count, general.file_type, parameters) as the gguf reader sees them."""
    reader = open_gguf_header(path)
    field = reader.get_field("general.file_type")
    ftype = int(field.parts[field.data[0]][0]) if field is not None else None
    params = sum(int(t.n_elements) for t in reader.tensors)
    return len(reader.tensors), ftype, params


def verify_gguf(path: Path, *, file_type: int, tensor_count: int | None, label: str) -> int:
    """Open ``path`` with the gguf reader; raise unless tensor count and file type are right.

    Returns the parameter count (for bits per weight in the sidecar).
    """
    try:
        count, ftype, params = read_gguf_facts(path)
    except Exception as err:  # noqa: BLE001 - a damaged file raises anything from the reader
        raise QuantDeskError(
            f"The {label} file came out unreadable ({type(err).__name__}: {err}); nothing was kept, try again."
        ) from None
    if ftype != file_type:
        raise QuantDeskError(
            f"The {label} file has file type {ftype}, not {file_type}; nothing was kept, please report this."
        )
    if tensor_count is not None and count != tensor_count:
        raise QuantDeskError(
            f"The {label} file has {count} tensors instead of {tensor_count}; nothing was kept, try again."
        )
    return params
