"""The commands' stable ``--json`` stream: one JSON object per line on stdout, flushed at once."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO


class JsonEvents:
    """``progress``/``warning`` and ``error`` events shared by every command; each adds its own ``done``."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out

    def _write(self, data: dict[str, Any]) -> None:
        out = self._out or sys.stdout
        out.write(json.dumps(data) + "\n")
        out.flush()

    def progress(self, event: Any) -> None:
        data = {"event": "warning" if event.step == "warning" else "progress", **event.to_dict()}
        data["fraction"] = round(event.fraction, 5)
        self._write(data)

    def error(self, message: str, cancelled: bool = False) -> None:
        data: dict[str, Any] = {"event": "error", "message": message}
        if cancelled:
            data["cancelled"] = True
        self._write(data)
        print(f"quantdesk: error: {message}", file=sys.stderr)
