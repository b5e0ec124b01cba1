"""The first minutes: Qt's missing system libraries, Start here, the demo, picks, reopening the last model."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qtapp.platform_check import XCB_LIBRARIES, missing_libraries, xcb_problem

ROOT = Path(__file__).resolve().parents[2]
NOT_HERE = {"libxcb-cursor.so.0": "libxcb-cursor0", "libquantdesk-nowhere.so.7": "libquantdesk-nowhere7"}


def _loads(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def test_xcb_check_names_a_missing_library_and_its_apt_package():
    assert missing_libraries(NOT_HERE) == (
        [] if _loads("libxcb-cursor.so.0") else ["libxcb-cursor.so.0"]) + ["libquantdesk-nowhere.so.7"]
    sentence = xcb_problem(NOT_HERE, environ={"QT_QPA_PLATFORM": "xcb"})
    assert sentence is not None and "\n" not in sentence
    assert "libquantdesk-nowhere.so.7" in sentence
    assert sentence.endswith("libquantdesk-nowhere7") and "sudo apt install " in sentence
    # Offscreen, or a Wayland session: xcb is not used, so nothing is missing for it.
    assert xcb_problem(NOT_HERE, environ={"QT_QPA_PLATFORM": "offscreen"}) is None
    assert xcb_problem(NOT_HERE, environ={"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"}) is None


def test_xcb_check_agrees_with_the_loader_on_the_real_list():
    """The installed libxcb-cursor (and every other library in the list) is found exactly when it loads."""
    assert missing_libraries() == [name for name in XCB_LIBRARIES if not _loads(name)]
    sentence = xcb_problem(environ={"QT_QPA_PLATFORM": "xcb"})
    assert (sentence is None) == all(_loads(name) for name in XCB_LIBRARIES)


def test_quantdesk_says_what_to_install_instead_of_aborting(tmp_path):
    """The real entry point on xcb with a library missing: one sentence, exit 1, Qt never loaded."""
    code = ("import sys, qtapp.platform_check as p; p.XCB_LIBRARIES = dict(p.XCB_LIBRARIES, "
            "**{'libquantdesk-nowhere.so.7': 'libquantdesk-nowhere7'}); from qtapp.launch import main; "
            "rc = main([]); print('qt loaded' if 'PySide6.QtWidgets' in sys.modules else 'qt not loaded'); "
            "sys.exit(rc)")
    env = dict(os.environ, QT_QPA_PLATFORM="xcb", PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 1, run.stderr
    assert run.stdout.strip() == "qt not loaded"
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quantdesk: error: ")
    assert "libquantdesk-nowhere.so.7" in lines[0] and "sudo apt install" in lines[0]
    assert "libquantdesk-nowhere7" in lines[0]


def test_install_script_checks_the_same_libraries(tmp_path):
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path),
               QUANTDESK_XCB_LIBRARIES="libxcb-cursor.so.0:libxcb-cursor0 libquantdesk-nowhere.so.7:libquantdesk-nowhere7")
    run = subprocess.run(["bash", "packaging/install.sh", "--dry-run", "--desktop-only"], cwd=ROOT,
                         capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    warning = [line for line in run.stderr.splitlines() if "missing" in line]
    cursor = [] if _loads("libxcb-cursor.so.0") else ["libxcb-cursor0"]
    assert warning == [
        f"warning: the window needs system libraries that are missing here "
        f"({' '.join((['libxcb-cursor.so.0'] if cursor else []) + ['libquantdesk-nowhere.so.7'])}); "
        f"install them with: sudo apt install {' '.join(cursor + ['libquantdesk-nowhere7'])}"]
    env["QUANTDESK_XCB_LIBRARIES"] = "libxcb-cursor.so.0:libxcb-cursor0"
    run = subprocess.run(["bash", "packaging/install.sh", "--dry-run", "--desktop-only"], cwd=ROOT,
                         capture_output=True, text=True, env=env, timeout=60)
    assert ("missing" in run.stderr) == bool(cursor)


def _window(qtbot):
    from qtapp.main_window import MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    window.confirm_quit = lambda: True  # a failure must not leave the suite waiting on a modal question
    window.resize(1280, 800)
    window.show()
    qtbot.waitUntil(lambda: window.started, timeout=10_000)
    return window


def test_first_start_shows_start_here_with_the_demo_focused(qtbot, gui_settings):
    window = _window(qtbot)
    assert window.stack.currentWidget() is window.start_panel
    assert window.start_panel.isVisible() and not window.tabs.isVisible()
    assert window.start_panel.demo.text() == "Try the demo model"
    qtbot.waitUntil(lambda: window.focusWidget() is window.start_panel.demo, timeout=5_000)
    assert not window.start_action.isEnabled() and not window.stop_action.isEnabled()
    window.close()


def _link_demo(data_home: Path, model: Path) -> Path:
    """The demo folder, already prepared: a link to a test model (building it takes a minute)."""
    demo = data_home / "quantdesk" / "models" / "SmolLM2-135M-Instruct"
    demo.parent.mkdir(parents=True)
    demo.symlink_to(model)
    return demo


def test_picks_open_on_enter_and_double_click_and_list_each_model_once(qtbot, gui_settings, tmp_path, tiny_dir,
                                                                       smollm2_dir):
    from PySide6.QtCore import Qt

    from qtapp import settings

    demo = _link_demo(tmp_path / "data", tiny_dir)
    settings.remember_model(smollm2_dir)
    settings.remember_model(demo)  # opened before: the demo is also a recent model
    window = _window(qtbot)
    picks = window.model_panel.picks
    qtbot.waitUntil(lambda: picks.count() > 0, timeout=30_000)
    texts = [picks.item(i).text() for i in range(picks.count())]
    assert texts.count("Demo model: SmolLM2-135M-Instruct") == 1
    assert len({p.resolve() for p in picks.paths()}) == picks.count()
    assert f"Recent: {smollm2_dir.name}" in texts

    # The relaunch reopened the last model (the demo); Enter on another pick opens that one.
    qtbot.waitUntil(lambda: window.session.model_path == demo and not window.session.busy, timeout=60_000)
    picks.setFocus()
    picks.setCurrentRow(texts.index(f"Recent: {smollm2_dir.name}"))
    qtbot.keyClick(picks, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: window.session.model_path == smollm2_dir and not window.session.busy, timeout=60_000)

    row = texts.index("Demo model: SmolLM2-135M-Instruct")
    rect = picks.visualItemRect(picks.item(row))
    qtbot.mouseClick(picks.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.wait(300)
    assert window.session.model_path == smollm2_dir  # a single click only selects
    qtbot.mousePress(picks.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(picks.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: window.session.model_path == demo and not window.session.busy, timeout=60_000)
    window.close()


def test_relaunch_reopens_the_last_model(qtbot, gui_settings, tiny_dir):
    from qtapp import settings

    settings.remember_model(tiny_dir)
    window = _window(qtbot)
    qtbot.waitUntil(lambda: window.session.model_path == tiny_dir and bool(window.session.model_info),
                    timeout=60_000)
    assert window.stack.currentWidget() is window.tabs
    window.close()


@pytest.mark.slow
def test_demo_is_prepared_with_a_real_progress_bar(qtbot, gui_settings, tmp_path, smollm2_dir):
    """The first time: the demo button shows progress (tensors, an ETA), the model panel says so, then it opens."""
    window = _window(qtbot)
    panel = window.start_panel
    seen: list[tuple[int, str]] = []
    window.session.demo_progress.connect(lambda _e: seen.append((panel.progress.value(), panel.progress_text.text())))
    qtbot.keyClick(panel.demo, " ")  # Space presses the focused button
    qtbot.waitUntil(lambda: window.session.demo_busy, timeout=5_000)
    assert panel.progress.isVisible() and not panel.demo.isEnabled()
    assert window.model_panel.title.full_text() == "Preparing the demo model…"
    qtbot.waitUntil(lambda: window.session.model_path is not None and bool(window.session.model_info),
                    timeout=400_000)
    values = [v for v, _ in seen]
    assert values == sorted(values) and len(set(values)) > 5  # it moved, forwards only
    assert any("tensor" in text and "left" in text for _, text in seen)
    demo = tmp_path / "data" / "quantdesk" / "models" / "SmolLM2-135M-Instruct"
    assert window.session.model_path == demo and window.session.model_info["parameters"] == 134_515_008
    assert not panel.progress.isVisible() or window.stack.currentWidget() is window.tabs
    window.close()
