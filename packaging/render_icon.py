"""Draw resources/icons/quantdesk.svg as a bitmap icon the platform wants (.png, .ico).

Used by the macOS installer (a 1024 px PNG that ``sips`` turns into .icns) and the
Windows installer (a 256 px .ico for the Start-menu shortcut). Qt is already in the
environment, so no extra tool is needed.

    python packaging/render_icon.py resources/icons/quantdesk.svg out.png 1024
"""

from __future__ import annotations

import os
import sys


def render(svg: str, out: str, size: int) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])  # noqa: F841 - Qt needs one
    renderer = QSvgRenderer(svg)
    if not renderer.isValid():
        raise SystemExit(f"render_icon: {svg} is not a valid SVG file")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    renderer.render(painter)
    painter.end()
    if not image.save(out):
        raise SystemExit(f"render_icon: could not write {out}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit("usage: render_icon.py ICON.svg OUT.(png|ico) SIZE")
    render(sys.argv[1], sys.argv[2], int(sys.argv[3]))
