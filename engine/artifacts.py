"""The library of everything QuantDesk produced: each output has a JSON sidecar.

A sidecar sits beside its artifact as ``<name>.quantdesk.json`` (for a GGUF
file and for a Hugging Face folder alike) and records where the artifact came
from, how it was made and, later, how it measured. The chat pane, the
evaluation and the GUI's results table all read this one library, so the
sidecar's keys are a stable contract: new keys may be added, none renamed.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from engine.errors import QuantDeskError

SIDECAR_SUFFIX = ".quantdesk.json"
SCHEMA_VERSION = 1
_MAX_SIDECAR = 4 * 1024**2  # a real sidecar is a few kB
# The sidecar's keys and the types a readable one carries (None allowed where listed).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "format": (str,), "source": (str,), "size_bytes": (int,), "options": (dict,), "versions": (dict,),
    "created_at": (str,), "evaluation": (dict,), "source_name": (str, type(None)),
    "source_params": (int, type(None)),
}


class SidecarDamaged(QuantDeskError):
    """A sidecar that cannot be trusted: not JSON, wrong types, far too large, or not a file."""
# Names that are never a finished output: a browser's partial download, QuantDesk's own temporaries.
_TEMPORARY = (".part", ".quantdesk-part", ".quantdesk-old")


@dataclass
class Artifact:
    """One output: a GGUF file or a Hugging Face folder, with what is known about it."""

    path: Path
    format: str  # format id, e.g. "gguf:Q4_K_M" or "hf:bnb-nf4"; "" when unknown
    source: str  # absolute path of the model it was made from; "" when unknown
    size_bytes: int
    options: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    evaluation: dict[str, Any] = field(default_factory=dict)
    source_name: str = ""  # the source's display name (its folder or file name)
    source_params: int | None = None  # parameter count of the source, when known
    tracked: bool = True  # False: found on disk without a sidecar (not saved)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def kind(self) -> str:
        """``"hf"`` for a folder, ``"gguf"`` for a file."""
        return "hf" if self.path.is_dir() or self.format.startswith("hf:") else "gguf"

    @property
    def format_label(self) -> str:
        from engine.formats import FORMATS

        fmt = FORMATS.get(self.format)
        return fmt.label if fmt else (self.format or "unknown")

    @property
    def bits_per_weight(self) -> float | None:
        """Measured from the size on disk when the source's parameter count is known."""
        if self.source_params:
            return self.size_bytes * 8 / self.source_params
        return None

    def to_dict(self) -> dict[str, Any]:
        """The sidecar's content (and the ``--json`` record of ``quantdesk list``)."""
        return {
            "schema": SCHEMA_VERSION,
            "name": self.name,
            "path": str(self.path),
            "kind": self.kind,
            "format": self.format,
            "source": self.source,
            "source_name": self.source_name,
            "source_params": self.source_params,
            "size_bytes": self.size_bytes,
            "options": self.options,
            "versions": self.versions,
            "created_at": self.created_at,
            "evaluation": self.evaluation,
            "tracked": self.tracked,
        }


def sidecar_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + SIDECAR_SUFFIX)


def size_on_disk(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def package_versions(*distributions: str) -> dict[str, str]:
    """QuantDesk's version and each installed distribution's, for the sidecar and the model card."""
    from engine import __version__

    found = {"quantdesk": __version__}
    for dist in distributions:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_sidecar(
    artifact: Path,
    *,
    format: str,
    source: Path | str,
    options: dict[str, Any] | None = None,
    versions: dict[str, str] | None = None,
    source_name: str | None = None,
    source_params: int | None = None,
) -> Artifact:
    """Record a finished artifact. Written atomically; replaces an older sidecar of the same name."""
    src = Path(source).resolve() if source else None
    record = Artifact(
        path=artifact,
        format=format,
        source=str(src) if src else "",
        size_bytes=size_on_disk(artifact),
        options=dict(options or {}),
        versions={**package_versions(), **(versions or {})},
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        source_name=source_name if source_name is not None else (src.name if src else ""),
        source_params=source_params,
    )
    _save(record)
    return record


def read_sidecar(artifact: Path) -> Artifact | None:
    """The artifact's record, or None when it has no sidecar or a damaged one."""
    try:
        return load_sidecar(artifact)
    except SidecarDamaged:
        return None


def load_sidecar(artifact: Path) -> Artifact | None:
    """The artifact's record; None when it has no sidecar; SidecarDamaged (one sentence) when it is unreadable."""
    side = sidecar_path(artifact)
    data = _read_bounded_json(side)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise _damaged(side, "not a JSON object")
    known = set(Artifact.__dataclass_fields__) - {"path", "tracked"}
    values = {k: v for k, v in data.items() if k in known}
    for key, value in values.items():
        kinds = _FIELD_TYPES.get(key, (object,))
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise _damaged(side, f"{key} is {type(value).__name__}")
    if values.get("size_bytes", 0) < 0 or (values.get("source_params") or 0) < 0:
        raise _damaged(side, "a negative size")
    values["versions"] = {str(k): str(v) for k, v in values.get("versions", {}).items()}
    values.setdefault("format", "")
    values.setdefault("source", "")
    if "size_bytes" not in values:
        values["size_bytes"] = size_on_disk(artifact)
    if not values.get("source_name") and values["source"]:
        values["source_name"] = Path(values["source"]).name
    return Artifact(path=artifact, **values)


def _read_bounded_json(side: Path) -> Any:
    """The sidecar's JSON, None when there is none; never reads more than _MAX_SIDECAR bytes."""
    try:
        info = side.stat()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _damaged(side, err.strerror or "unreadable") from None
    if not stat.S_ISREG(info.st_mode):
        raise _damaged(side, "not a regular file")
    if info.st_size > _MAX_SIDECAR:
        raise _damaged(side, f"{info.st_size:,} bytes")
    try:
        with side.open("rb") as fh:
            raw = fh.read(_MAX_SIDECAR + 1)
    except OSError as err:
        raise _damaged(side, err.strerror or "unreadable") from None
    if len(raw) > _MAX_SIDECAR:
        raise _damaged(side, "far too large")
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _damaged(side, "not valid JSON") from None


def _damaged(side: Path, why: str) -> SidecarDamaged:
    return SidecarDamaged(
        f"Skipped {side.name[: -len(SIDECAR_SUFFIX)]}: its sidecar {side.name} is damaged ({why}); delete the "
        "sidecar (the model stays) or make the output again."
    )


def update_evaluation(artifact: Path, results: dict[str, Any]) -> Artifact:
    """Merge evaluation results into an artifact's sidecar.

    A missing or damaged sidecar is replaced by a fresh one carrying what can be
    read from the artifact itself, so the results are never lost to it.
    """
    record = read_sidecar(artifact) or Artifact(
        path=artifact, format=guess_format(artifact), source="", size_bytes=size_on_disk(artifact)
    )
    record.tracked = True
    record.evaluation.update(results)
    _save(record)
    return record


def describe(artifact: Path) -> Artifact | None:
    """What is known about one output: its sidecar, else a guess from the file itself."""
    record = read_sidecar(artifact)
    if record is not None:
        return record
    if not looks_like_artifact(artifact):
        return None
    return Artifact(path=artifact, format=guess_format(artifact), source="",
                    size_bytes=size_on_disk(artifact), tracked=False)


def list_artifacts(
    folder: Path, *, include_untracked: bool = False, warn: Callable[[str], None] | None = None
) -> list[Artifact]:
    """Every artifact with a sidecar in ``folder`` whose artifact still exists, sorted by name.

    With ``include_untracked``, GGUF files and Hugging Face folders without a
    sidecar (downloaded, or made by another tool) are listed too, their source
    unknown. An artifact whose sidecar is damaged is skipped (listed as
    untracked with ``include_untracked``), and ``warn`` hears one sentence about it.
    """
    found: dict[str, Artifact] = {}
    if not folder.is_dir():
        return []
    for side in sorted(folder.glob("*" + SIDECAR_SUFFIX)):
        artifact = side.with_name(side.name[: -len(SIDECAR_SUFFIX)])
        if artifact.exists() and not artifact.name.endswith(_TEMPORARY):
            try:
                record = load_sidecar(artifact)
            except SidecarDamaged as err:
                if warn is not None:
                    warn(str(err))
                continue
            if record is not None:
                found[artifact.name] = record
    if include_untracked:
        for entry in folder.iterdir():
            if entry.name not in found and looks_like_artifact(entry):
                record = describe(entry)
                if record is not None:
                    found[entry.name] = record
    return [found[name] for name in sorted(found)]


def artifacts_by_source(folder: Path, *, include_untracked: bool = False) -> dict[str, list[Artifact]]:
    """The artifacts of ``folder`` grouped by the source they came from ("" for unknown)."""
    groups: dict[str, list[Artifact]] = {}
    for record in list_artifacts(folder, include_untracked=include_untracked):
        groups.setdefault(record.source, []).append(record)
    return groups


def artifacts_of(source: Path, folder: Path) -> list[Artifact]:
    """The artifacts in ``folder`` made from ``source`` (compared as resolved paths)."""
    wanted = str(Path(source).resolve())
    return [a for a in list_artifacts(folder) if a.source == wanted]


def made_by_quantdesk(path: Path) -> bool:
    """Whether an output of this name is QuantDesk's own (it has a readable sidecar), so a job may replace it."""
    return read_sidecar(path) is not None


def is_sidecar(path: Path) -> bool:
    """A sidecar's name is QuantDesk's own, so a job may always rewrite one."""
    return path.name.endswith(SIDECAR_SUFFIX)


def delete_artifact(artifact: Path) -> None:
    """Remove an output and its sidecar; never raises."""
    from engine.fsutil import remove_quietly

    remove_quietly(artifact)
    remove_quietly(sidecar_path(artifact))


def looks_like_artifact(path: Path) -> bool:
    """A GGUF file, or a folder holding a Hugging Face model (config.json and weights)."""
    if path.name.endswith(_TEMPORARY) or path.name.startswith("."):
        return False
    if path.is_file():
        return path.suffix.lower() == ".gguf"
    if path.is_dir() and (path / "config.json").is_file():
        return any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    return False


def guess_format(path: Path) -> str:
    """A format id read from the output itself (no sidecar): bnb config, or the GGUF type in the name."""
    from engine.formats import FORMATS

    if path.is_dir():
        try:
            config = _read_bounded_json(path / "config.json")
        except SidecarDamaged:
            return ""
        quant = config.get("quantization_config") if isinstance(config, dict) else None
        if not quant:
            return "hf:fp16" if isinstance(config, dict) else ""
        if not isinstance(quant, dict):
            return ""
        if quant.get("quant_method") == "bitsandbytes":
            if quant.get("load_in_8bit") or quant.get("_load_in_8bit"):
                return "hf:bnb-int8"
            return "hf:bnb-nf4"
        return ""
    stem = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.stem
    upper = stem.upper()
    for fmt in sorted(FORMATS.values(), key=lambda f: -len(f.name)):
        if fmt.family == "gguf" and (upper.endswith("-" + fmt.name) or upper.endswith("." + fmt.name)):
            return fmt.id
    return ""


def _save(record: Artifact) -> None:
    from engine.fsutil import write_text_atomic

    data = record.to_dict()
    data.pop("tracked", None)
    write_text_atomic(sidecar_path(record.path), json.dumps(data, indent=2, sort_keys=True))
