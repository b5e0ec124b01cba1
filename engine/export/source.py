"""What an exported GGUF was made from: its name and the source model's generation config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.errors import QuantDeskError

_MAX_JSON = 1024**2


def check_gguf(path: Path) -> Path:
    """The GGUF file itself, resolved; one sentence when it is not a GGUF file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise QuantDeskError(f"{path} does not exist; point at a .gguf file QuantDesk made.")
    try:
        with p.open("rb") as fh:
            magic = fh.read(4)
    except OSError as err:
        raise QuantDeskError(f"Cannot read {path}: {err.strerror or err}.") from None
    if magic != b"GGUF":
        raise QuantDeskError(f"{path} is not a GGUF file; LM Studio, Ollama and llama.cpp need a .gguf file.")
    return p.resolve()


def display_name(gguf: Path) -> str:
    """The model's name without the GGUF type: the sidecar's source name, else the file's stem."""
    from engine.artifacts import read_sidecar
    from engine.inspect import model_name

    record = read_sidecar(gguf)
    if record is not None and record.source_name:
        return Path(record.source_name).stem if record.source_name.endswith(".gguf") else record.source_name
    return model_name(gguf)


def gguf_type(gguf: Path) -> str | None:
    """``Q4_K_M`` and the like, from the sidecar or the header."""
    from engine.artifacts import read_sidecar

    record = read_sidecar(gguf)
    if record is not None and record.format.startswith("gguf:"):
        return record.format.split(":", 1)[1]
    try:
        from engine.inspect import inspect_model

        return inspect_model(gguf).dtype
    except QuantDeskError:
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        if path.stat().st_size > _MAX_JSON:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def generation_config(gguf: Path, source: Path | None = None) -> dict[str, Any] | None:
    """The source model's generation_config.json, following the sidecars back a few steps (GGUF → GGUF → HF)."""
    from engine.artifacts import read_sidecar

    current: Path | None = Path(source) if source else gguf
    for _ in range(4):
        if current is None:
            return None
        if current.is_dir():
            return _read_json(current / "generation_config.json")
        if current.name == "generation_config.json":
            return _read_json(current)
        record = read_sidecar(current)
        current = Path(record.source) if record is not None and record.source else None
    return None
