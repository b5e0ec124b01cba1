"""Writing outputs safely: ``*.part`` first, renamed only when complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from engine.errors import QuantDeskError
from engine.units import format_bytes

PART_SUFFIX = ".part"


def part_path(final: Path) -> Path:
    return final.with_name(final.name + PART_SUFFIX)


def remove_quietly(path: Path) -> None:
    """Remove a file or folder if it exists; never raises."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError:
        pass


def clean_stale_parts(folder: Path) -> list[Path]:
    """Remove ``*.part`` files and folders left by a crash; returns what was removed."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if entry.name.endswith(PART_SUFFIX):
            remove_quietly(entry)
            removed.append(entry)
    return removed


def promote(part: Path, final: Path) -> Path:
    """Atomically rename a finished ``.part`` into place."""
    if final.exists():
        remove_quietly(final)
    os.replace(part, final)
    return final


def nearest_existing(path: Path) -> Path:
    """``path`` itself, or the closest parent that exists."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def disk_free(path: str | os.PathLike[str]) -> int | None:
    """Free bytes on the disk holding ``path`` (or that would hold it, once created)."""
    try:
        return shutil.disk_usage(nearest_existing(Path(path))).free
    except OSError:
        return None


def require_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise one sentence when the disk holding ``folder`` has less than ``needed`` bytes free."""
    free = disk_free(folder)
    if free is not None and needed > free:
        raise QuantDeskError(
            f"Not enough free disk space in {folder}: {what} need about {format_bytes(needed)} "
            f"but only {format_bytes(free)} is free; free some space or choose another output folder."
        )


def check_output_folder(folder: Path) -> None:
    """Raise unless ``folder`` exists writable or can be created; creates nothing, leaves no trace."""
    existing = nearest_existing(folder)
    if not existing.is_dir():
        raise QuantDeskError(
            f"Cannot create the output folder {folder}: {existing} is a file, not a folder; choose another folder."
        )
    try:
        probe = tempfile.mkdtemp(prefix=".quantdesk-probe-", dir=existing)
        os.rmdir(probe)
    except OSError as err:
        where = "is not writable" if existing == Path(folder).expanduser().absolute() \
            else f"cannot be created ({err.strerror})"
        raise QuantDeskError(f"The output folder {folder} {where}; choose another folder.") from None


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed; raise QuantDeskError when it cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise QuantDeskError(
            f"Cannot create the output folder {folder} ({err.strerror}); choose another folder."
        ) from None
    probe = folder / f".quantdesk-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError:
        raise QuantDeskError(
            f"The output folder {folder} is not writable; choose another folder."
        ) from None
    finally:
        remove_quietly(probe)
