"""Opening a file a user pointed at, to read its first bytes, without ever blocking on it.

Opening a FIFO waits for a writer and reading a device never ends, so a model
path is opened without blocking and refused unless it is a regular file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from engine.errors import QuantDeskError

_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def special_kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")


def refuse_special(path: Path, mode: int) -> None:
    kind = special_kind(mode)
    if kind is not None:
        raise QuantDeskError(f"{path} is {kind}, not a model file; point at a .gguf file, a config.json "
                             "or a model folder.")


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for binary reading; QuantDeskError (one sentence) unless it is a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise QuantDeskError(f"Cannot read {path}: {err.strerror or err}.") from None
    try:
        refuse_special(path, os.fstat(fd).st_mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_head(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of a regular file (fewer if it is shorter)."""
    with open_regular(path) as fh:
        return fh.read(n)
