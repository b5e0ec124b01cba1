"""Starting the Qt application."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def run_gui(qt_args: list[str], model: str | None = None, screenshot: str | None = None,
            size: str = "1280x800") -> int:
    if screenshot:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from qtapp.main_window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0], *qt_args])
    app.setApplicationName("QuantDesk")
    app.setOrganizationName("QuantDesk")
    window = MainWindow(model=Path(model) if model else None)
    width, height = (int(v) for v in size.lower().split("x"))
    window.resize(width, height)
    window.show()
    if screenshot:
        app.processEvents()
        window.grab().save(screenshot)
        return 0
    return app.exec()
