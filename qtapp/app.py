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
            prompt: str | None = None, side_by_side: bool = False, theme: str | None = None,
            get: str | None = None, hand_on: str | None = None) -> int:
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
        return _screenshot(app, window, screenshot, prompt, tab, get, hand_on)
    if get:
        window.first_painted.connect(lambda: window.get_from_hub(get))
    return app.exec()


def _report_first_paint(app) -> None:
    print(f"first_paint_s {time.time() - _T0:.4f}", flush=True)
    heavy = [m for m in ("torch", "transformers", "llama_cpp") if m in sys.modules]
    print(f"heavy_modules_at_first_paint {json.dumps(heavy)}", flush=True)
    app.quit()


def _screenshot(app, window, path: str, prompt: str | None, tab: str | None = None, get: str | None = None,
                hand_on: str | None = None) -> int:
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
    dialog = None
    if get:
        window.get_from_hub(get)
        dialog = window.get_dialog
        wait_until(lambda: dialog.plan is not None or dialog.error.isVisible(), 120000)
    if hand_on:
        dialog = _hand_on(window, hand_on)
    wait_until(lambda: False, 300)  # one more round of layout
    ok = _grab(window, dialog).save(path)
    window.confirm_quit = lambda: True
    window.close()
    return 0 if ok else 1


def _hand_on(window, target: str):
    """Select the newest GGUF in Results and press the hand-off button; the command's dialog, if one opens."""
    from qtapp.workers import wait_until

    window.show_tab("results")
    results = window.results
    rows = [i for i, r in enumerate(results.rows) if str(r.get("path", "")).endswith(".gguf")
            and not r.get("original")]
    if not rows:
        return None
    results.table.selectRow(rows[-1])
    results.handoff.buttons[target].click()
    wait_until(lambda: window.command_dialog is not None and window.command_dialog.isVisible()
               or (window.queue.jobs and not window.queue.busy), 60000)
    return window.command_dialog


def _grab(window, dialog):
    """The window, with an open dialog drawn over it where it would sit (a dialog is a window of its own)."""
    shot = window.grab()
    if dialog is None or not dialog.isVisible():
        return shot
    from PySide6.QtGui import QColor, QPainter

    inner = dialog.grab()
    ratio = shot.devicePixelRatio() or 1.0
    w, h = shot.width() / ratio, shot.height() / ratio
    iw, ih = inner.width() / (inner.devicePixelRatio() or 1.0), inner.height() / (inner.devicePixelRatio() or 1.0)
    x, y = int((w - iw) / 2), int(max(0, (h - ih) / 2))
    painter = QPainter(shot)
    painter.fillRect(0, 0, int(w), int(h), QColor(0, 0, 0, 70))  # the window behind, dimmed
    painter.drawPixmap(x, y, inner)
    painter.setPen(QColor(0, 0, 0, 120))
    painter.drawRect(x - 1, y - 1, int(iw) + 1, int(ih) + 1)
    painter.end()
    return shot
