"""The last resort of the command line: one sentence that says what to do for any exception.

Most failures are QuantDeskError raised where the problem is understood. What
slips through (an OSError from a write, a ValueError from a damaged file deep
inside a library) is named here by its kind, with the file it concerns, so the
user still gets a sentence they can act on instead of a traceback.
"""

from __future__ import annotations

import errno
import json

from engine.terminal import one_line

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def find_errno(err: BaseException | None, wanted: set[int] | frozenset[int]) -> OSError | None:
    """The first OSError with an errno in ``wanted`` in ``err``, its causes and contexts."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in wanted:
            return err
        err = err.__cause__ or err.__context__
    return None


def is_disk_full(err: BaseException | None) -> bool:
    """True when a full disk (or quota) is anywhere in the exception's chain."""
    return find_errno(err, _FULL) is not None


def _where(err: OSError) -> str:
    name = err.filename if err.filename is not None else err.filename2
    return f" {one_line(name, 300)}" if name is not None else ""


def os_sentence(err: OSError) -> str:
    """One sentence for an operating-system failure, by its errno."""
    full = find_errno(err, _FULL)
    if full is not None:
        return f"disk full while writing{_where(full) or ' the output'}: free some space and try again."
    code = err.errno
    where = _where(err)
    path = where.strip() or "a file"
    if code in (errno.EACCES, errno.EPERM):
        return f"Permission denied for {path}: choose a folder you can write to, or fix its permissions."
    if code == errno.EROFS:
        return f"{path} is on a read-only file system: choose a folder on a writable disk."
    if code == errno.ENOENT:
        return f"{path} does not exist (or was removed while QuantDesk used it); check the path and try again."
    if code == errno.EISDIR:
        return f"{path} is a folder where a file was expected; check the path."
    if code == errno.ENOTDIR:
        return f"Part of {path} is a file where a folder was expected; check the path."
    if code == errno.ENAMETOOLONG:
        return "A path is too long for the file system; choose a shorter folder or name."
    if code in (errno.EMFILE, errno.ENFILE):
        return "Too many files are open; close other programs (or raise `ulimit -n`) and try again."
    if code == errno.EIO:
        return f"Input/output error on {path}: the disk or the file may be damaged; copy it again or check the disk."
    if code == errno.EFBIG:
        return f"{path} grew larger than this file system allows; choose a folder on another disk (not FAT32)."
    if code == errno.ELOOP:
        return f"{path} is a symbolic link that points back at itself; fix the link."
    if code == errno.ENOMEM:
        return "Out of memory; close other programs and try again."
    reason = err.strerror or type(err).__name__
    return f"{reason} ({path}); check the path and that the disk is healthy, then try again."


def explain(err: BaseException) -> str:
    """One sentence for an exception that reached the command line."""
    if isinstance(err, OSError):
        return os_sentence(err)
    if is_disk_full(err):
        return os_sentence(find_errno(err, _FULL))  # type: ignore[arg-type]
    if isinstance(err, MemoryError):
        return "Out of memory; close other programs (or choose a smaller model or context) and try again."
    if isinstance(err, RecursionError):
        return ("A file QuantDesk read is nested far too deeply to be a real model file (damaged or hostile); "
                "download it again.")
    if isinstance(err, UnicodeDecodeError):
        return "A file QuantDesk read as text is not UTF-8 (damaged, or not the file it should be); download it again."
    if isinstance(err, json.JSONDecodeError):
        return f"A file QuantDesk read is not valid JSON (line {err.lineno}: {err.msg}); download it again."
    from engine.trust import explain_loader_error

    translated = explain_loader_error(err, "The model")
    if translated:
        return translated
    detail = one_line(f"{type(err).__name__}: {err}", 300)
    if isinstance(err, (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError)):
        return (f"A model file holds something QuantDesk cannot read ({detail}); check that the files are "
                f"complete and download them again.")
    return f"Unexpected failure ({detail}); run again with QUANTDESK_DEBUG=1 and report the output."


def sentence(err: BaseException) -> str:
    """What the user reads for any exception: a QuantDeskError's own sentence, else ``explain``."""
    from engine.errors import QuantDeskError

    if isinstance(err, QuantDeskError):
        return translate_message(str(err))
    return explain(err)


def translate_message(message: str) -> str:
    """A QuantDeskError's sentence, with torch's and transformers' jargon turned into what to do."""
    from engine.trust import explain_loader_error

    return explain_loader_error(message, "The model") or message
