"""Icons and the style sheet from the project's ``resources/`` folder."""

from __future__ import annotations

from functools import cache

from PySide6.QtGui import QIcon

from engine.resources import resource_path


@cache
def icon(name: str) -> QIcon:
    path = resource_path("icons", f"{name}.svg")
    return QIcon(str(path)) if path.is_file() else QIcon()


def style_sheet() -> str:
    try:
        return resource_path("style.qss").read_text(encoding="utf-8")
    except OSError:
        return ""
