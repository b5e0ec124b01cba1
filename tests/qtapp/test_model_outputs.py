"""Results stay with their model: a folder per model, remembered after success, listed wherever written."""

from __future__ import annotations

from pathlib import Path

import pytest


def _window(qtbot):
    from qtapp.main_window import MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    window.confirm_quit = lambda: True  # a failure must not leave the suite waiting on a modal question
    window.resize(1280, 800)
    window.show()
    qtbot.waitUntil(lambda: window.started and bool(window.session.machine), timeout=30_000)
    return window


def _open(qtbot, window, path: Path) -> None:
    window.open_model(path)
    qtbot.waitUntil(lambda: window.session.model_path == path and bool(window.session.model_info)
                    and not window.session.busy, timeout=60_000)


def test_each_model_has_its_own_default_folder(qtbot, gui_settings, tmp_path, tiny_dir, smollm2_dir):
    from qtapp import settings

    home = tmp_path / "home"
    window = _window(qtbot)
    _open(qtbot, window, tiny_dir)
    assert window.quantize.chosen_out_dir() == home / "QuantDesk" / "tiny"
    _open(qtbot, window, smollm2_dir)
    assert window.quantize.chosen_out_dir() == home / "QuantDesk" / "smollm2"
    (home / "Documents").mkdir()  # where there is a documents folder, QuantDesk goes inside it
    assert settings.output_base() == home / "Documents" / "QuantDesk"
    window.close()


@pytest.mark.slow
def test_folder_remembered_after_success_and_outputs_listed_from_every_folder(qtbot, gui_settings, tmp_path,
                                                                              tiny_dir, smollm2_dir):
    window = _window(qtbot)
    _open(qtbot, window, tiny_dir)
    quantize = window.quantize
    quantize.check.setChecked(False)  # folders are the point here, not the quick check
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the folder should be")
    quantize.out_dir.setText(str(blocked))
    quantize.preselect(["gguf:Q8_0"])
    quantize.start.click()
    qtbot.waitUntil(lambda: not window.queue.busy, timeout=120_000)
    assert window.queue.jobs[-1].state == "failed"
    _open(qtbot, window, smollm2_dir)
    _open(qtbot, window, tiny_dir)
    assert quantize.chosen_out_dir() == tmp_path / "home" / "QuantDesk" / "tiny"  # the failed one is not kept

    first = tmp_path / "first"
    quantize.out_dir.setText(str(first))
    quantize.preselect(["gguf:Q8_0"])
    quantize.start.click()
    qtbot.waitUntil(lambda: not window.queue.busy, timeout=180_000)
    assert window.queue.jobs[-1].state == "done", window.queue.jobs[-1].outcome.message
    made = first / "tiny-Q8_0.gguf"
    assert made.is_file()

    # Another folder typed in: the output made before is still listed, in Results and in Chat.
    quantize.out_dir.setText(str(tmp_path / "elsewhere"))
    window.results.refresh_btn.click()
    qtbot.waitUntil(lambda: any(Path(r["path"]) == made for r in window.results.rows), timeout=30_000)
    combo = window.chat.left.model
    assert any(Path(combo.itemData(i)) == made for i in range(combo.count()))

    # Reopened: the folder the job succeeded into is the model's folder now.
    _open(qtbot, window, smollm2_dir)
    assert not any(Path(r["path"]) == made for r in window.results.rows)  # not smollm2's output
    _open(qtbot, window, tiny_dir)
    assert quantize.chosen_out_dir() == first
    qtbot.waitUntil(lambda: any(Path(r["path"]) == made for r in window.results.rows), timeout=30_000)
    window.close()


def test_a_failed_open_keeps_the_model_open_before(qtbot, gui_settings, tmp_path, tiny_dir):
    window = _window(qtbot)
    _open(qtbot, window, tiny_dir)
    rec = window.recommendation
    qtbot.waitUntil(lambda: rec.table.rowCount() > 0, timeout=30_000)
    rows = rec.table.rowCount()
    title = window.model_panel.title.full_text()

    holiday = tmp_path / "holiday"
    holiday.mkdir()
    (holiday / "beach.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a model")
    window.open_model(holiday)
    qtbot.waitUntil(window.banner.isVisible, timeout=30_000)
    qtbot.waitUntil(lambda: not window.session.busy, timeout=30_000)
    assert window.session.model_path == tiny_dir and window.session.model_info
    assert window.model_panel.title.full_text() == title
    assert rec.table.rowCount() == rows
    assert window.stack.currentWidget() is window.tabs
    window.close()
