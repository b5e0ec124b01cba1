"""The library of everything QuantDesk produced: each output has a JSON sidecar.

A sidecar sits beside its artifact as ``<name>.quantdesk.json`` (for a GGUF
file and for a Hugging Face folder alike) and records where the artifact came
from, how it was made and, later, how it measured.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SIDECAR_SUFFIX = ".quantdesk.json"


@dataclass
class Artifact:
    path: Path
    format: str
    source: str
    size_bytes: int
    options: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    evaluation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def sidecar_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + SIDECAR_SUFFIX)


def size_on_disk(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def write_sidecar(artifact: Path, *, format: str, source: Path | str, options: dict[str, Any] | None = None,
                  versions: dict[str, str] | None = None) -> Artifact:
    """Record a finished artifact. Written atomically."""
    record = Artifact(
        path=artifact,
        format=format,
        source=str(Path(source).resolve()) if source else "",
        size_bytes=size_on_disk(artifact),
        options=options or {},
        versions=versions or {},
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    _save(record)
    return record


def read_sidecar(artifact: Path) -> Artifact | None:
    side = sidecar_path(artifact)
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    data["path"] = artifact
    known = {f for f in Artifact.__dataclass_fields__}
    return Artifact(**{k: v for k, v in data.items() if k in known})


def update_evaluation(artifact: Path, results: dict[str, Any]) -> Artifact:
    """Merge evaluation results into an artifact's sidecar (creating a bare one if needed)."""
    record = read_sidecar(artifact) or Artifact(path=artifact, format="", source="",
                                                size_bytes=size_on_disk(artifact))
    record.evaluation.update(results)
    _save(record)
    return record


def list_artifacts(folder: Path) -> list[Artifact]:
    """Every artifact with a sidecar in ``folder`` whose artifact still exists, sorted by name."""
    found: list[Artifact] = []
    if not folder.is_dir():
        return found
    for side in sorted(folder.glob("*" + SIDECAR_SUFFIX)):
        artifact = side.with_name(side.name[: -len(SIDECAR_SUFFIX)])
        if artifact.exists():
            record = read_sidecar(artifact)
            if record is not None:
                found.append(record)
    return found


def _save(record: Artifact) -> None:
    side = sidecar_path(record.path)
    tmp = side.with_name(side.name + ".part")
    tmp.write_text(json.dumps(record.to_dict(), indent=2, sort_keys=True))
    os.replace(tmp, side)
