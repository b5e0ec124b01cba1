"""A finished-looking GGUF is only renamed into place once the gguf reader agrees it is whole."""

from __future__ import annotations

from pathlib import Path

from engine.errors import QuantDeskError


def read_gguf_facts(path: Path) -> tuple[int, int | None, int]:
    """(tensor count, general.file_type, parameters) as the gguf reader sees them."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    field = reader.get_field("general.file_type")
    ftype = int(field.contents()) if field is not None else None
    params = sum(int(t.n_elements) for t in reader.tensors)
    return len(reader.tensors), ftype, params


def verify_gguf(path: Path, *, file_type: int, tensor_count: int | None, label: str) -> int:
    """Open ``path`` with gguf.GGUFReader; raise unless tensor count and file type are right.

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
