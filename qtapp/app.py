"""Starting the Qt application: the window paints first; engine work follows on worker threads."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

# Launch time for the start-up benchmark (set by the benchmark before exec, else now).
_T0 = float(os.environ.get("QUANTDESK_T0") or time.time())


def run_gui(qt_args: list[str], model: str | None = None, screenshot: str | None = None,
            size: str | None = None, tab: str | None = None, out: str | None = None,
            prompt: str | None = None, side_by_side: bool = False, theme: str | None = None) -> int:
    if screenshot:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        size = size or "1280x800"
    from qtapp.platform_check import xcb_problem

    problem = xcb_problem()
    if problem:  # Qt would abort with its own message; say what to install instead
        print(f"quantdesk: error: {problem}", file=sys.stderr)
        return 1
    from PySide6.QtWidgets import QApplication

    from qtapp.assets import style_sheet
    from qtapp.main_window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0], *qt_args])
    app.setApplicationName("QuantDesk")
    app.setOrganizationName("QuantDesk")
    app.setDesktopFileName("quantdesk")  # lets docks match the window to quantdesk.desktop
    if theme:
        from qtapp.theme import apply

        apply(app, theme)
    app.setStyleSheet(style_sheet())
    window = MainWindow(model=Path(model) if model else None)
    if out:
        window.use_output_folder(Path(out))
    if os.environ.get("QUANTDESK_EXIT_AFTER_PAINT"):
        window.first_painted.connect(lambda: _report_first_paint(app))
    if size:
        width, height = (int(v) for v in size.lower().split("x"))
        window.resize(width, height)
    elif not window.restore_geometry():
        window.resize(1280, 800)
    if tab:
        window.show_tab(tab)
    window.chat.side_by_side.setChecked(side_by_side)
    window.show()
    if screenshot:
        return _screenshot(app, window, screenshot, prompt, tab)
    return app.exec()


def _report_first_paint(app) -> None:
    print(f"first_paint_s {time.time() - _T0:.4f}", flush=True)
    heavy = [m for m in ("torch", "transformers", "llama_cpp") if m in sys.modules]
    print(f"heavy_modules_at_first_paint {json.dumps(heavy)}", flush=True)
    app.quit()


def _screenshot(app, window, path: str, prompt: str | None, tab: str | None = None) -> int:
    from qtapp.workers import wait_until

    wait_until(lambda: window.started, 10000)
    # Let machine detection, inspection and the recommendation land before grabbing.
    wait_until(lambda: not window.session.busy, 120000)
    if tab:
        window.show_tab(tab)  # opening a model shows the Recommendation tab
    if prompt:
        window.chat.prompt.setText(prompt)
        window.chat.send()
        wait_until(lambda: not window.chat.busy, 300000)
    wait_until(lambda: False, 300)  # one more round of layout
    ok = window.grab().save(path)
    window.close()
    return 0 if ok else 1
