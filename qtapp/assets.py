"""Icons and the style sheet from the project's ``resources/`` folder."""

from __future__ import annotations

from functools import cache

from PySide6.QtGui import QIcon

from engine.resources import resource_path


@cache
def icon(name: str) -> QIcon:
    path = resource_path("icons", f"{name}.svg")
    return QIcon(str(path)) if path.is_file() else QIcon()


# Keyboard users must see where they are: a ring around whatever has the focus.
FOCUS_RINGS = """
QPushButton#Primary:focus { border: 2px solid palette(text); }
QListWidget:focus, QTableWidget:focus, QTextBrowser:focus, QPlainTextEdit:focus {
    border: 2px solid palette(highlight);
}
"""


def style_sheet() -> str:
    try:
        base = resource_path("style.qss").read_text(encoding="utf-8")
    except OSError:
        base = ""
    return base + FOCUS_RINGS
