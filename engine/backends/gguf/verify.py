"""A finished-looking GGUF is only renamed into place once QuantDesk's GGUF reader agrees it is whole.

``engine.gguf_header`` parses the header, every metadata key and every
tensor's description, and checks that each tensor's data lies inside the file
(a file cut short fails there), without decoding the vocabulary.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import QuantDeskError
from engine.gguf_header import DamagedGguf, read_gguf_header


def read_gguf_facts(path: Path) -> tuple[int, int | None, int]:
    """(tensor count, general.file_type, parameters) of a GGUF file; QuantDeskError when it is damaged."""
    header = read_gguf_header(path)
    return len(header.tensors), header.file_type, header.parameters


def verify_gguf(path: Path, *, file_type: int, tensor_count: int | None, label: str) -> int:
    """Read ``path`` back; raise unless it is whole and its tensor count and file type are right.

    Returns the parameter count (for bits per weight in the sidecar).
    """
    try:
        count, ftype, params = read_gguf_facts(path)
    except DamagedGguf as err:
        raise QuantDeskError(
            f"The {label} file came out damaged ({err.reason}); nothing was kept, try again."
        ) from None
    except QuantDeskError as err:
        raise QuantDeskError(f"The {label} file came out unreadable ({err}); nothing was kept, try again.") from None
    if ftype != file_type:
        raise QuantDeskError(
            f"The {label} file has file type {ftype}, not {file_type}; nothing was kept, please report this."
        )
    if tensor_count is not None and count != tensor_count:
        raise QuantDeskError(
            f"The {label} file has {count} tensors instead of {tensor_count}; nothing was kept, try again."
        )
    return params
