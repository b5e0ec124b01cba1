"""What QuantDesk may touch in a user's folder, and how it writes there.

Users point ``--out`` at ``~/Downloads`` or their home folder, so a job
behaves there like git or rsync do:

- Everything unfinished carries a name only QuantDesk uses, with the owning
  process in it: ``<name>.<pid>-<start>.quantdesk-part`` (an earlier version
  kept aside while it is replaced: ``...quantdesk-old``). Clean-up removes only
  those names, and only when their process is gone; a browser's
  ``film.iso.part`` or a user's ``chapters.part/`` is never looked at.
- One ``Transaction`` per job records every path the job creates, by name, as
  it creates it; cancel or failure removes exactly those and puts back every
  earlier output it replaced. Nothing is judged by "what appeared in the folder".
- One job per folder: ``.quantdesk-lock`` holds the owner's pid and start time,
  is taken with O_CREAT|O_EXCL, and is taken over only from a dead process.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.errors import QuantDeskError
from engine.units import format_bytes

PART_SUFFIX = ".quantdesk-part"
OLD_SUFFIX = ".quantdesk-old"
LOCK_NAME = ".quantdesk-lock"
TEMPORARY_SUFFIXES = (PART_SUFFIX, OLD_SUFFIX)
_OWNED_NAME = re.compile(r"^(?P<name>.+)\.(?P<pid>\d+)-(?P<start>[0-9a-f]+)(?P<suffix>\.quantdesk-(?:part|old))$")
_START_SLACK_S = 2.0  # start times are stored in whole seconds
_TAGS: dict[int, str] = {}

Ownership = Callable[[Path], bool]  # may an existing path of this name be replaced without --overwrite?


# --------------------------------------------------------------------------- owners


def _start_time(pid: int) -> float | None:
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return -1.0  # someone else's live process: alive, start unknown


def owner_tag() -> str:
    """``<pid>-<start time in hex>`` of this process: what makes a temporary name ours and alive."""
    pid = os.getpid()
    if pid not in _TAGS:
        _TAGS[pid] = f"{pid}-{int(_start_time(pid) or 0.0):x}"
    return _TAGS[pid]


def owner_alive(pid: int, start: float | None) -> bool:
    """Whether process ``pid`` still runs and is the one that started at ``start`` (not a reused pid)."""
    if pid <= 0:
        return False
    now = _start_time(pid)
    if now is None:
        return False
    if now < 0 or start is None:
        return True
    return abs(now - start) <= _START_SLACK_S


def parse_owned(name: str) -> tuple[str, int, int, str] | None:
    """(final name, pid, start, suffix) of a QuantDesk temporary name; None for anything else."""
    match = _OWNED_NAME.match(name)
    if match is None:
        return None
    return match["name"], int(match["pid"]), int(match["start"], 16), match["suffix"]


def is_temporary(name: str) -> bool:
    """A name QuantDesk uses only while writing (never a finished output)."""
    return name.endswith(TEMPORARY_SUFFIXES)


def part_path(final: Path) -> Path:
    """Where ``final`` is written until it is complete: a name only this process of QuantDesk uses."""
    return final.with_name(f"{final.name}.{owner_tag()}{PART_SUFFIX}")


def old_path(final: Path) -> Path:
    """Where an earlier version of ``final`` waits while this job replaces it."""
    return final.with_name(f"{final.name}.{owner_tag()}{OLD_SUFFIX}")


# --------------------------------------------------------------------------- plain helpers


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
    """Remove QuantDesk temporaries whose process is gone; returns what was removed or put back.

    An earlier output kept aside by a job that died is put back when nothing
    took its name; anything not named by QuantDesk, or owned by a live
    process, is left alone.
    """
    done: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return done
    for entry in entries:
        owned = parse_owned(entry.name)
        if owned is None:
            continue
        final_name, pid, start, suffix = owned
        if owner_alive(pid, start):
            continue
        final = entry.with_name(final_name)
        if suffix == OLD_SUFFIX and not os.path.lexists(final):
            with contextlib.suppress(OSError):
                os.rename(entry, final)
                done.append(entry)
            continue
        remove_quietly(entry)
        done.append(entry)
    return done


def promote(part: Path, final: Path) -> Path:
    """Rename a finished file into place (replacing a file there); for callers outside a job."""
    if final.is_dir() and not final.is_symlink():
        remove_quietly(final)
    os.replace(part, final)
    return final


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``path`` through a QuantDesk temporary name, renamed into place only once complete."""
    part = part_path(path)
    try:
        with part.open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, path)
    except BaseException:
        remove_quietly(part)
        raise
    return path


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


def check_out_text(text: str | os.PathLike[str] | None) -> None:
    """Refuse an empty or blank output folder name (``--out ""``) before it becomes "the current folder"."""
    if text is None or not str(text).strip():
        raise QuantDeskError("The output folder is empty; give one, e.g. --out ./quantized.")


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


def disk_full_sentence(folder: Path) -> str:
    return f"The disk holding {folder} is full; free some space or choose another output folder, then try again."


def check_not_foreign(path: Path, ours: Ownership, overwrite: bool = False) -> None:
    """Before a job starts: raise when ``path`` exists, is not QuantDesk's own and --overwrite was not given."""
    if not overwrite and os.path.lexists(path) and not ours(path):
        raise refuse_foreign(path)


def refuse_foreign(path: Path) -> QuantDeskError:
    """The one sentence for a same-name file or folder QuantDesk did not make."""
    return QuantDeskError(
        f"{path} already exists and was not made by QuantDesk; move it away, choose another output folder, "
        "or pass --overwrite to replace it."
    )


def _same_entry(a: Path, b: Path) -> bool:
    """Two names for one file (hard links), symlinks not followed."""
    sa, sb = os.lstat(a), os.lstat(b)
    return (sa.st_ino, sa.st_dev) == (sb.st_ino, sb.st_dev)


# --------------------------------------------------------------------------- the lock


class FolderLock:
    """``.quantdesk-lock`` in an output folder: one job writes there at a time."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._record: dict[str, Any] | None = None

    @property
    def held(self) -> bool:
        return self._record is not None

    def acquire(self) -> FolderLock:
        """Take the lock or raise one sentence naming the job that holds it."""
        me = {"pid": os.getpid(), "start": _start_time(os.getpid()) or 0.0, "host": socket.gethostname(),
              "since": datetime.now().isoformat(timespec="seconds")}
        for _attempt in range(20):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._read_holder()
                if holder is not None and self._alive(holder):
                    raise self._held_by(holder) from None
                self._take_over(holder)
                continue
            except OSError as err:
                if err.errno == errno.ENOSPC:
                    raise QuantDeskError(disk_full_sentence(self.folder)) from None
                raise QuantDeskError(
                    f"The output folder {self.folder} is not writable ({err.strerror}); choose another folder."
                ) from None
            try:
                os.write(fd, json.dumps(me).encode())
            except OSError as err:
                os.close(fd)
                remove_quietly(self.path)
                if err.errno == errno.ENOSPC:
                    raise QuantDeskError(disk_full_sentence(self.folder)) from None
                raise QuantDeskError(f"Cannot write {self.path} ({err.strerror}); choose another folder.") from None
            os.close(fd)
            self._record = me
            return self
        raise QuantDeskError(f"Another QuantDesk job keeps taking {self.folder}; wait for it to finish.")

    def release(self) -> None:
        """Remove the lock if it is still ours; never raises."""
        if self._record is None:
            return
        mine, self._record = self._record, None
        holder = self._read_holder(wait=False)
        if holder is not None and holder.get("pid") == mine["pid"] and holder.get("start") == mine["start"]:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _read_holder(self, wait: bool = True) -> dict[str, Any] | None:
        """The lock's record; None when it stays unreadable (a writer that died between create and write)."""
        for _ in range(10 if wait else 1):
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(data, dict) and isinstance(data.get("pid"), int):
                    return data
            except FileNotFoundError:
                return {}
            except (OSError, ValueError):
                pass
            if wait:
                time.sleep(0.1)  # its owner may be writing it right now
        return None

    @staticmethod
    def _alive(holder: dict[str, Any]) -> bool:
        if not holder:  # gone meanwhile: free to take
            return False
        if holder.get("host") not in (None, socket.gethostname()):
            return True  # another machine's job: nothing here can tell it has ended
        start = holder.get("start")
        return owner_alive(int(holder["pid"]), float(start) if isinstance(start, (int, float)) else None)

    def _held_by(self, holder: dict[str, Any]) -> QuantDeskError:
        host = holder.get("host")
        where = f" on {host}" if host and host != socket.gethostname() else ""
        since = str(holder.get("since") or "").replace("T", " ")
        started = f", started {since}" if since else ""
        return QuantDeskError(
            f"Another QuantDesk job (process {holder['pid']}{where}{started}) is writing into {self.folder}; "
            f"wait for it to finish or choose another output folder (if no such job runs, delete {self.path})."
        )

    def _take_over(self, holder: dict[str, Any] | None) -> None:
        """Move a dead job's lock out of the way; a live lock grabbed by mistake goes straight back."""
        if holder == {}:
            return  # already gone
        if holder is None:
            try:
                age = time.time() - self.path.stat().st_mtime
            except OSError:
                return
            if age < 5.0:
                raise QuantDeskError(
                    f"Another QuantDesk job is starting in {self.folder}; wait for it to finish or choose "
                    "another output folder."
                )
        aside = self.folder / f"{LOCK_NAME}.{owner_tag()}{PART_SUFFIX}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another process took it over first; try again
        except OSError as err:
            raise QuantDeskError(f"Cannot replace the stale lock {self.path} ({err.strerror}); delete it.") from None
        try:
            moved = json.loads(aside.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            moved = None
        if holder is not None and moved != holder:  # a new owner's lock, created since we read: put it back
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        remove_quietly(aside)


# --------------------------------------------------------------------------- the transaction


class Transaction:
    """One job's changes to one output folder, recorded by name as they are made.

    ``begin`` creates the folder (remembering each parent it made), takes the
    folder's lock and clears dead jobs' temporaries. Paths the job makes are
    recorded with ``part``/``track`` before they exist; finished ones move into
    place with ``promote`` (or ``claim`` just before being rewritten in place),
    which keeps any earlier output of that name aside. ``commit`` drops the
    earlier versions; ``rollback`` removes exactly what was recorded and puts
    the earlier versions back. Either releases the lock.
    """

    def __init__(self, folder: Path, *, overwrite: bool = False) -> None:
        self.folder = Path(folder).expanduser()
        self.overwrite = overwrite
        self._created: list[Path] = []  # in the order they were made
        self._folders: list[Path] = []  # folders made by begin(), outermost first
        self._kept: dict[Path, Path] = {}  # final -> its earlier version, kept aside
        self._lock = FolderLock(self.folder)
        self.open = False

    # -- life cycle

    def begin(self) -> Transaction:
        self._make_folders()
        try:
            self._lock.acquire()
        except BaseException:
            self._remove_folders()
            raise
        self.open = True
        clean_stale_parts(self.folder)
        return self

    def commit(self) -> None:
        """The job succeeded: earlier versions go, the lock is released."""
        for old in self._kept.values():
            remove_quietly(old)
        self._finish()

    def rollback(self) -> None:
        """Undo the job: remove what it made, put back what it replaced; never raises."""
        replaced = set(self._kept)
        for path in reversed(self._created):
            if path not in replaced:
                remove_quietly(path)
        for final, old in self._kept.items():
            self._restore(final, old)
        self._lock.release()  # before the folders: a folder holding only the lock is still the job's
        self._remove_folders()
        self._finish()

    def _finish(self) -> None:
        self._created.clear()
        self._kept.clear()
        self._folders.clear()
        self._lock.release()
        self.open = False

    # -- recording

    def track(self, path: Path) -> Path:
        """Record ``path`` as made by this job (before it exists, so a crash mid-write is covered)."""
        path = Path(path)
        if path not in self._created:
            self._created.append(path)
        return path

    def part(self, final: Path) -> Path:
        """The temporary name ``final`` is written under, recorded as this job's."""
        return self.track(part_path(final))

    def discard(self, path: Path) -> None:
        """Remove something this job made and no longer needs (e.g. an intermediate file)."""
        if path in self._created:
            remove_quietly(path)
            self._created.remove(path)

    def take_back(self, final: Path) -> None:
        """Undo one path this job put in place: remove it, and put back the earlier version it replaced."""
        final = Path(final)
        if final not in self._created:
            return
        self._created.remove(final)
        old = self._kept.pop(final, None)
        if old is None:
            remove_quietly(final)
        else:
            self._restore(final, old)

    def owns(self, path: Path) -> bool:
        return path in self._created or path in self._kept

    def check_free(self, final: Path, ours: Ownership | None = None) -> None:
        """Raise unless ``final`` is free, this job's, QuantDesk's own (``ours``) or --overwrite was given."""
        if not os.path.lexists(final) or self.owns(final) or self.overwrite:
            return
        if ours is not None and ours(final):
            return
        raise refuse_foreign(final)

    # -- putting things in place

    def promote(self, part: Path, final: Path, ours: Ownership | None = None) -> Path:
        """Move a finished, verified ``part`` to ``final``; an earlier ``final`` is kept aside until commit."""
        self.check_free(final, ours)
        try:
            if final in self._kept or not os.path.lexists(final):
                self._replace_own(part, final)
            else:
                self._keep_aside(final, move=True)
                os.rename(part, final)
        except OSError as err:
            raise self._os_error(err, final) from None
        self.track(final)
        if part in self._created:
            self._created.remove(part)
        return final

    def claim(self, final: Path, ours: Ownership | None = None) -> Path:
        """``final`` is about to be rewritten in place (a sidecar): record it, keeping its earlier version."""
        self.check_free(final, ours)
        if not self.owns(final):
            if os.path.lexists(final):
                try:
                    self._keep_aside(final, move=False)
                except OSError as err:
                    raise self._os_error(err, final) from None
            self.track(final)
        return final

    def write_text(self, final: Path, text: str, ours: Ownership | None = None) -> Path:
        """Write a small file (model card, Modelfile) under a temporary name, then promote it."""
        part = self.part(final)
        try:
            part.write_text(text, encoding="utf-8")
        except OSError as err:
            self.discard(part)
            raise self._os_error(err, final) from None
        return self.promote(part, final, ours)

    def _replace_own(self, part: Path, final: Path) -> None:
        """``final`` is absent or already this job's (its earlier version is safe): plain replace."""
        if os.path.isdir(final) and not os.path.islink(final):
            trash = part_path(final.with_name(final.name + ".replaced"))
            os.rename(final, trash)
            remove_quietly(trash)
        os.replace(part, final)

    def _keep_aside(self, final: Path, *, move: bool) -> None:
        """Keep ``final``'s current version under a QuantDesk name until the job ends.

        ``move``: a finished part is renamed over ``final`` next, so a hard link
        keeps the old file (and ``final`` never goes missing). Otherwise ``final``
        may be rewritten in place, so the earlier version is copied.
        """
        old = old_path(final)
        remove_quietly(old)
        if os.path.isdir(final) and not os.path.islink(final):
            os.rename(final, old)  # a folder cannot be linked; the new one follows at once
        elif not move:
            shutil.copy2(final, old, follow_symlinks=False)
        else:
            try:
                os.link(final, old, follow_symlinks=False)
            except OSError:
                os.rename(final, old)
        self._kept[final] = old

    @staticmethod
    def _restore(final: Path, old: Path) -> None:
        try:
            if os.path.isdir(old) and not os.path.islink(old):
                if os.path.lexists(final):
                    trash = part_path(final.with_name(final.name + ".replaced"))
                    os.rename(final, trash)
                    remove_quietly(trash)
                os.rename(old, final)
            elif os.path.lexists(final) and _same_entry(old, final):
                os.unlink(old)  # never replaced: both names are the same file (rename would do nothing)
            else:
                if os.path.isdir(final) and not os.path.islink(final):
                    remove_quietly(final)
                os.replace(old, final)
        except OSError:
            pass  # the earlier version stays under its QuantDesk name; the next run puts it back

    def _os_error(self, err: OSError, final: Path) -> QuantDeskError:
        if err.errno == errno.ENOSPC:
            return QuantDeskError(disk_full_sentence(self.folder))
        return QuantDeskError(f"Cannot write {final} ({err.strerror}); check the output folder and try again.")

    # -- the folder itself

    def _make_folders(self) -> None:
        missing: list[Path] = []
        p = self.folder.expanduser().absolute()
        while not os.path.lexists(p) and p != p.parent:
            missing.append(p)
            p = p.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                continue  # made by someone else meanwhile: not ours
            except OSError as err:
                self._remove_folders()
                if err.errno == errno.ENOSPC:
                    raise QuantDeskError(disk_full_sentence(folder)) from None
                raise QuantDeskError(
                    f"Cannot create the output folder {self.folder} ({err.strerror}); choose another folder."
                ) from None
            self._folders.append(folder)
        if not self.folder.is_dir():
            raise QuantDeskError(f"The output folder {self.folder} is not a folder; choose another folder.")

    def _remove_folders(self) -> None:
        for folder in reversed(self._folders):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a file saved there meanwhile keeps it
        self._folders.clear()
