"""A cheap fingerprint of a model's files: what caches beside the outputs are keyed by.

Reading every byte of a multi-GB checkpoint would cost more than the work it
saves, so each weight, config and tokenizer file contributes its name, size,
modification time, first MiB and last 64 KiB: a re-download, an edit or a
replaced shard changes it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_HEAD = 1024 * 1024
_TAIL = 64 * 1024
_WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".json", ".model", ".jinja", ".txt", ".tiktoken")


def weights_fingerprint(source: Path) -> str:
    """A hash that changes when the source's weights, config or tokenizer change (a file or a folder)."""
    source = Path(source).expanduser().resolve()
    if source.is_file():
        files = [source]
        root = source.parent
    else:
        root = source
        files = sorted(p for p in source.rglob("*")
                       if p.is_file() and p.suffix.lower() in _WEIGHT_SUFFIXES and not p.name.startswith("."))
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        with f.open("rb") as fh:
            h.update(fh.read(_HEAD))
            if st.st_size > _HEAD + _TAIL:
                fh.seek(st.st_size - _TAIL)
                h.update(fh.read(_TAIL))
    return h.hexdigest()
