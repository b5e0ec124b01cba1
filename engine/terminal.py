"""Text bound for a terminal. Anything read from a model (names, metadata, sidecars) is untrusted:
an escape sequence in a GGUF field must not clear the screen or retitle the window."""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, and the C1 controls (0x80-0x9f; 0x9b is a one-byte CSI).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_ANY = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """``text`` with control characters (escape sequences' ESC included) removed; keeps tabs and newlines."""
    return _CONTROL.sub("", str(text))


def one_line(text: object, limit: int = 1000) -> str:
    """``text`` as a single printable line: line breaks become spaces, controls go, long text is cut."""
    flat = _CONTROL_ANY.sub(lambda m: " " if m.group() in "\n\r\t" else "", str(text))
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
