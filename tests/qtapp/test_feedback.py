"""Honest feedback and plain words, on the real window with the real engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt


def _open(qtbot, window, path: Path) -> None:
    window.open_model(path)
    qtbot.waitUntil(lambda: window.session.model_path == path and bool(window.session.model_info)
                    and not window.session.busy, timeout=60_000)


def _recommended(qtbot, window, path: Path):
    _open(qtbot, window, path)
    rec = window.recommendation
    qtbot.waitUntil(lambda: rec.table.rowCount() > 0, timeout=30_000)
    return rec


def test_banner_floats_and_clears_on_the_next_success(qtbot, main_window, tmp_path, tiny_dir, smollm2_dir):
    window = main_window
    _open(qtbot, window, tiny_dir)
    tabs_at = window.tabs.mapTo(window, window.tabs.rect().topLeft())
    holiday = tmp_path / "holiday"
    holiday.mkdir()
    window.open_model(holiday)
    qtbot.waitUntil(window.banner.isVisible, timeout=30_000)
    assert window.tabs.mapTo(window, window.tabs.rect().topLeft()) == tabs_at  # nothing was pushed down
    assert window.banner.geometry().width() > 200
    qtbot.waitUntil(lambda: not window.session.busy, timeout=30_000)
    _open(qtbot, window, smollm2_dir)
    assert not window.banner.isVisible()


def test_send_waits_for_a_model_and_keeps_the_typed_text(qtbot, main_window):
    chat = main_window.chat
    main_window.show_tab("chat")
    qtbot.keyClicks(chat.prompt, "Is anybody there?")
    assert not chat.send_btn.isEnabled() and not main_window.start_action.isEnabled()
    assert "No model to chat with yet" in chat.hint.text()
    qtbot.keyClick(chat.prompt, Qt.Key.Key_Return)
    assert chat.prompt.text() == "Is anybody there?"
    assert chat.left.transcript.toPlainText() == ""


def test_context_presets_and_a_visible_clamp(qtbot, main_window, tiny_dir):
    rec = _recommended(qtbot, main_window, tiny_dir)  # trained for 2,048 tokens
    labels = [rec.context.itemText(i) for i in range(rec.context.count())]
    assert labels == ["2,048 tokens · 2k (the model's maximum)"]
    assert rec.value == 2048
    rec.context.lineEdit().selectAll()
    qtbot.keyClicks(rec.context.lineEdit(), "32768")
    qtbot.keyClick(rec.context.lineEdit(), Qt.Key.Key_Return)
    assert rec.value == 2048 and rec.context.currentText().startswith("2,048 tokens")
    assert rec.context_note.isVisible()
    assert rec.context_note.text() == ("Lowered to 2,048 tokens: the model was trained for at most that "
                                       "(you asked for 32,768).")
    rec.context.lineEdit().selectAll()
    qtbot.keyClicks(rec.context.lineEdit(), "1k")
    qtbot.keyClick(rec.context.lineEdit(), Qt.Key.Key_Return)
    assert rec.value == 1024 and not rec.context_note.isVisible()
    qtbot.waitUntil(lambda: main_window.session.recommendation.get("context") == 1024, timeout=30_000)


def test_reading_a_row_keeps_the_ticks_until_use_these_formats(qtbot, main_window, smollm2_dir):
    window = main_window
    rec = _recommended(qtbot, window, smollm2_dir)
    ticked = window.quantize.targets()
    assert ticked  # the ranking's first picks
    last = rec.table.rowCount() - 1
    rec.table.selectRow(last)
    assert window.quantize.targets() == ticked
    full_why = rec.options[last]["why"]
    assert rec.detail.toPlainText().endswith(full_why)
    rec.use_btn.click()
    assert window.tabs.currentWidget() is window.quantize
    wanted = rec.options[last]["format"]
    assert window.quantize.targets() == ([wanted] if window.quantize.boxes.get(wanted) is not None
                                         and window.quantize.boxes[wanted].isEnabled() else [])


def test_rows_speak_in_one_sentence_with_the_reasons_below(qtbot, main_window, smollm2_dir):
    rec = _recommended(qtbot, main_window, smollm2_dir)
    for row, opt in enumerate(rec.options):
        short = rec.table.item(row, 5).text()
        assert short.endswith(".") and short.count(". ") == 0 and len(short) < 90, short
        fit = rec.table.item(row, 4)
        word = {"fits": "fits", "tight": "tight", "no": "too big"}[opt["fit"]]
        assert fit.text().startswith(word) and "%" in fit.text()
        assert fit.foreground().color().name() in ("#2f9e44", "#e67700", "#e03131")
    gguf = next(r for r, o in enumerate(rec.options) if o["format"].startswith("gguf:Q") and "Llama-3-8B" in o["why"])
    rec.table.selectRow(gguf)
    assert "Llama-3-8B" in rec.detail.toPlainText()
    assert "Llama-3-8B" not in rec.table.item(gguf, 5).text()

    form = main_window.model_panel.form
    values = {form.itemAt(i, form.ItemRole.LabelRole).widget().text():
              form.itemAt(i, form.ItemRole.FieldRole).widget().text() for i in range(form.rowCount())}
    assert values["Attention"] == "Grouped-query attention (9 heads, 3 KV heads)"
    assert values["GGUF"] == "llama.cpp can convert it"


def test_toolbar_acts_only_where_it_can_and_ctrl_enter_never_starts_unseen_work(qtbot, main_window, tiny_dir):
    window = main_window
    assert not window.start_action.isEnabled() and not window.stop_action.isEnabled()
    _recommended(qtbot, window, tiny_dir)
    window.show_tab("recommendation")
    window.recommendation.table.setFocus()
    assert window.start_action.isEnabled()
    qtbot.keyClick(window.recommendation.table, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert window.tabs.currentWidget() is window.quantize
    assert window.queue.jobs == []  # it showed the ticks; nothing started
    for box in window.quantize.boxes.values():
        box.setChecked(False)
    assert not window.start_action.isEnabled()


@pytest.mark.slow
def test_job_card_folder_log_clear_and_cancelled_bar(qtbot, main_window, tiny_dir, tmp_path):
    from PySide6.QtWidgets import QApplication

    window = main_window
    _recommended(qtbot, window, tiny_dir)
    window.show_tab("quantize")
    window.quantize.preselect(["gguf:Q8_0"])
    window.quantize.start.click()
    row = window.quantize.job_list.rows[-1]
    row.log_btn.click()  # the Log window, open while the job runs, follows it
    view = row._log_view
    qtbot.waitUntil(lambda: row.state.text() == "done", timeout=180_000)
    assert view is not None and view.toPlainText() == "\n".join(row.log_lines)
    bar = view.verticalScrollBar()
    assert bar.value() == bar.maximum()
    assert "done:" in view.toPlainText().splitlines()[-1]
    row.log_dialog.close()

    out = tmp_path / "out"
    assert row.where.text() == f"In {out}"
    row.folder_btn.click()  # no file manager here (offscreen): the path, selectable and copyable
    assert row.path_row.isVisible() and row.path_field.text() == str(out)
    row.copy_btn.click()
    assert QApplication.clipboard().text() == str(out)

    window.quantize.preselect(["gguf:Q6_K"])
    window.quantize.start.click()
    second = window.quantize.job_list.rows[-1]
    qtbot.waitUntil(lambda: second.state.text() == "running", timeout=30_000)
    assert window.stop_action.isEnabled()
    window.stop_action.trigger()
    qtbot.waitUntil(lambda: not window.queue.busy, timeout=60_000)
    if second.state.text() == "cancelled":
        assert second.bar.property("state") == "cancelled" and second.bar.format() == "cancelled"
    job_list = window.quantize.job_list
    assert job_list.clear_btn.isEnabled()
    job_list.clear_btn.click()
    assert job_list.rows == [] and window.queue.jobs == []
    assert (out / "tiny-Q8_0.gguf").is_file()  # clearing the list keeps the files


@pytest.mark.slow
def test_chat_new_chat_no_loading_line_and_one_token(qtbot, main_window, tiny_nochat_gguf, tmp_path):
    import shutil

    from qtapp.chat_link import stats_line

    window = main_window
    model = tmp_path / "models" / tiny_nochat_gguf.name
    model.parent.mkdir()
    shutil.copy(tiny_nochat_gguf, model)
    _open(qtbot, window, model)
    chat, pane = window.chat, window.chat.left
    qtbot.waitUntil(lambda: pane.current_model() is not None, timeout=30_000)
    window.show_tab("chat")
    chat.max_tokens.setValue(1)
    chat.prompt.setText("Hello")
    chat.send_btn.click()
    qtbot.waitUntil(lambda: pane.busy, timeout=5_000)
    assert pane.loading.text().startswith("Loading ")
    qtbot.waitUntil(lambda: not pane.busy, timeout=120_000)
    text = pane.transcript.toPlainText()
    assert "Loading" not in text and not pane.loading.isVisible()
    assert "1 token" in text and "1 tokens" not in text
    assert stats_line(type("R", (), {"tokens": 2})()) == "2 tokens"
    assert pane.slot.slot.chat.history  # the model remembers the conversation...
    window.new_chat_action.trigger()
    assert pane.transcript.toPlainText() == "" and pane.slot.slot.chat.history == []  # ...until a new chat


@pytest.mark.slow
def test_evaluate_shows_progress_with_an_eta_on_results(qtbot, main_window, tiny_nochat_gguf, tmp_path):
    import shutil

    window = main_window
    model = tmp_path / "models" / tiny_nochat_gguf.name
    model.parent.mkdir()
    shutil.copy(tiny_nochat_gguf, model)
    _open(qtbot, window, model)
    results = window.results
    qtbot.waitUntil(lambda: len(results.rows) == 1, timeout=30_000)
    window.show_tab("quantize")
    etas: list[str] = []
    window.queue.progress.connect(lambda _j, _e: etas.append(results.eta.text()))
    results.table.selectRow(0)
    results.eval_btn.click()
    assert window.tabs.currentWidget() is results
    qtbot.waitUntil(results.progress_box.isVisible, timeout=10_000)
    qtbot.waitUntil(lambda: not window.queue.busy, timeout=180_000)
    assert results.progress_state.text() == "done", results.progress_step.text()
    assert any(e.startswith("about ") and e.endswith(" left") for e in etas), etas
    assert results.progress.value() == 1000


def test_chart_follows_a_dark_palette(qtbot):
    from PySide6.QtCharts import QChart

    from qtapp.theme import dark_palette
    from qtapp.views.quality_chart import QualityChart

    chart = QualityChart()
    qtbot.addWidget(chart)
    assert chart.chart().theme() == QChart.ChartTheme.ChartThemeLight
    chart.setPalette(dark_palette())
    assert chart.chart().theme() == QChart.ChartTheme.ChartThemeDark
    assert chart.chart().backgroundBrush().color().lightness() < 64
    chart.show_rows([{"name": "a", "size_bytes": 10 << 20, "ppl": 12.0}, {"name": "b", "size_bytes": 20 << 20,
                                                                          "ppl": 11.0}])
    for axis in chart.chart().axes():
        assert axis.labelsColor().lightness() > 192
