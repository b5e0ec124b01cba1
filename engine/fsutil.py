"""Writing outputs safely: ``*.part`` first, renamed only when complete."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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


def check_writable(folder: Path) -> None:
    """Raise QuantDeskError when ``folder`` cannot be created or written."""
    from engine.errors import QuantDeskError

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
