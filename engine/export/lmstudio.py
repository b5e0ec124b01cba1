"""LM Studio: the GGUF in its models folder as ``publisher/repository/file.gguf``.

The folder is the one LM Studio's own settings name: ``downloadsFolder`` in
``settings.json`` of its data folder (``~/.lmstudio``, moved by
``~/.lmstudio-home-pointer``, or ``~/.cache/lm-studio`` for old versions), else
``~/.lmstudio/models``; an explicit folder wins. A hard link costs no space and no
time when both are on one file system; otherwise the file is copied as a job under
a temporary name. A file already there is left alone: the same file is success, a
different one is refused.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import JobCancelled, QuantDeskError
from engine.jobs import JobGen, Progress
from engine.units import format_bytes

STEP = "export"
PUBLISHER = "quantdesk"
_CHUNK = 8 * 1024**2
_MAX_SETTINGS = 4 * 1024**2


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def lmstudio_home() -> Path:
    """LM Studio's data folder: the home pointer's target, ``~/.lmstudio``, or the old ``~/.cache/lm-studio``."""
    home = _home()
    pointer = home / ".lmstudio-home-pointer"
    try:
        if pointer.is_file() and pointer.stat().st_size < 4096:
            target = Path(pointer.read_text(encoding="utf-8").strip()).expanduser()
            if target.is_dir():
                return target
    except (OSError, UnicodeDecodeError):
        pass
    for candidate in (home / ".lmstudio", home / ".cache" / "lm-studio"):
        if candidate.is_dir():
            return candidate
    return home / ".lmstudio"


def lmstudio_models_dir(override: Path | str | None = None) -> Path:
    """Where LM Studio looks for models (``override`` first, then its settings, then its default)."""
    if override:
        return Path(override).expanduser()
    home = lmstudio_home()
    settings = home / "settings.json"
    try:
        if settings.is_file() and settings.stat().st_size < _MAX_SETTINGS:
            folder = json.loads(settings.read_text(encoding="utf-8")).get("downloadsFolder")
            if isinstance(folder, str) and folder.strip():
                return Path(folder.strip()).expanduser()
    except (OSError, ValueError, AttributeError):
        pass
    return home / "models"


def _safe_part(text: str, fallback: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return clean or fallback


@dataclass
class LmStudioPlan:
    source: Path
    target: Path
    method: str  # "present" (already there) | "link" | "copy"
    size_bytes: int

    @property
    def large(self) -> bool:
        """A copy worth asking about first (more than 1 GiB)."""
        return self.method == "copy" and self.size_bytes > 1024**3

    def to_dict(self) -> dict[str, Any]:
        return {"source": str(self.source), "target": str(self.target), "method": self.method,
                "size_bytes": self.size_bytes}


def _same_file(a: Path, b: Path, cancel: Any = None) -> bool:
    """Same inode, or the same bytes (compared only when the sizes match)."""
    try:
        if os.path.samefile(a, b):
            return True
        if a.stat().st_size != b.stat().st_size:
            return False
        with a.open("rb") as fa, b.open("rb") as fb:
            while True:
                if cancel is not None and cancel.cancelled:
                    raise JobCancelled()
                x, y = fa.read(_CHUNK), fb.read(_CHUNK)
                if x != y:
                    return False
                if not x:
                    return True
    except OSError:
        return False


def _same_device(src: Path, folder: Path) -> bool:
    from engine.fsutil import nearest_existing

    try:
        return src.stat().st_dev == nearest_existing(folder).stat().st_dev
    except OSError:
        return False


def plan_lmstudio(gguf: Path | str, models_dir: Path | str | None = None, *, publisher: str | None = None,
                  repository: str | None = None) -> LmStudioPlan:
    """Where the file goes and how; one sentence when a different file already sits there."""
    from engine.export.source import check_gguf, display_name

    src = check_gguf(Path(gguf))
    root = lmstudio_models_dir(models_dir)
    repo = _safe_part(repository or f"{display_name(src)}-GGUF", "model-GGUF")
    target = root / _safe_part(publisher or PUBLISHER, PUBLISHER) / repo / src.name
    size = src.stat().st_size
    if target.exists() or target.is_symlink():
        if target.is_file() and _same_file(src, target):
            return LmStudioPlan(src, target, "present", size)
        raise QuantDeskError(
            f"{target} already exists and is a different file; QuantDesk does not overwrite it, so move it "
            "away or choose another --repository name."
        )
    method = "link" if _same_device(src, root) else "copy"
    return LmStudioPlan(src, target, method, size)


def place_in_lmstudio(plan: LmStudioPlan, cancel: Any = None) -> JobGen[Path]:
    """Link or copy the file into place; a copy runs under a temporary name and never clobbers."""
    from engine.fsutil import disk_free, part_path, remove_quietly

    if plan.method == "present":
        yield Progress(STEP, 1.0, f"Already in LM Studio: {plan.target}", bytes_done=plan.size_bytes)
        return plan.target
    try:
        plan.target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise QuantDeskError(f"Cannot create {plan.target.parent} ({err.strerror}); choose another models folder.") from None
    if plan.method == "link":
        try:
            os.link(plan.source, plan.target)
            yield Progress(STEP, 1.0, f"Linked into LM Studio: {plan.target}", bytes_done=plan.size_bytes)
            return plan.target
        except FileExistsError:
            raise QuantDeskError(f"{plan.target} appeared meanwhile; QuantDesk does not overwrite it.") from None
        except OSError:
            pass  # the file system has no hard links (or refuses this one): copy instead
    free = disk_free(plan.target.parent)
    if free is not None and free < plan.size_bytes:
        raise QuantDeskError(
            f"Not enough free disk space in {plan.target.parent}: the copy needs {format_bytes(plan.size_bytes)} "
            f"but only {format_bytes(free)} is free; free some space or choose another models folder."
        )
    part = part_path(plan.target)
    if part.exists():
        remove_quietly(part)  # our own temporary name: a copy that was cut short
    start, done = time.monotonic(), 0
    try:
        with plan.source.open("rb") as src, part.open("xb") as dst:
            while chunk := src.read(_CHUNK):
                if cancel is not None and cancel.cancelled:
                    raise JobCancelled()
                dst.write(chunk)
                done += len(chunk)
                elapsed = time.monotonic() - start
                speed = done / elapsed if elapsed > 0.2 else None
                eta = (plan.size_bytes - done) / speed if speed else None
                yield Progress(STEP, done / max(1, plan.size_bytes),
                               f"Copying into LM Studio: {format_bytes(done)} of {format_bytes(plan.size_bytes)}",
                               bytes_done=done, eta_s=eta, extra={"target": str(plan.target), "speed_bps": speed})
            dst.flush()
            os.fsync(dst.fileno())
        try:
            os.link(part, plan.target)  # fails instead of replacing a file that appeared meanwhile
            part.unlink()
        except FileExistsError:
            raise QuantDeskError(f"{plan.target} appeared meanwhile; QuantDesk does not overwrite it.") from None
        except OSError:
            if plan.target.exists():
                raise QuantDeskError(f"{plan.target} appeared meanwhile; QuantDesk does not overwrite it.") from None
            os.replace(part, plan.target)
    except OSError as err:
        remove_quietly(part)
        if err.errno == errno.ENOSPC:
            raise QuantDeskError(f"The disk holding {plan.target.parent} filled up during the copy; free some "
                                 "space and try again.") from None
        raise QuantDeskError(f"Cannot copy to {plan.target}: {err.strerror or err}.") from None
    except BaseException:
        remove_quietly(part)
        raise
    yield Progress(STEP, 1.0, f"Copied into LM Studio: {plan.target}", bytes_done=plan.size_bytes)
    return plan.target
