"""The real window, driven with qtbot: open, recommend, quantize, chat, cancel, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _open(qtbot, window, path: Path) -> None:
    window.open_model(path)
    qtbot.waitUntil(lambda: not window.session.busy and window.session.model_path == path, timeout=60_000)


def test_not_a_model_shows_the_cli_sentence(qtbot, main_window, tmp_path):
    pictures = tmp_path / "holiday"
    pictures.mkdir()
    (pictures / "beach.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a picture")
    main_window.open_model(pictures)
    qtbot.waitUntil(main_window.banner.isVisible, timeout=30_000)
    cli = subprocess.run([sys.executable, "-m", "engine", "inspect", str(pictures)],
                         capture_output=True, text=True)
    assert cli.returncode != 0
    sentence = cli.stderr.strip().removeprefix("quantdesk: error: ")
    assert sentence and "\n" not in sentence
    assert main_window.banner.text.text() == sentence
    assert main_window.session.model_path is None


def test_hf_cache_pick_and_drop_open_models(qtbot, gui_settings, smollm2_dir, tmp_path, monkeypatch):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    from qtapp.main_window import MainWindow

    snapshot = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for f in smollm2_dir.iterdir():  # the cache holds links to its blobs, so links it is
        (snapshot / f.name).symlink_to(f)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    picks = window.model_panel.picks
    qtbot.waitUntil(lambda: any(picks.item(i).text() == "HF cache: HuggingFaceTB/SmolLM2-135M-Instruct"
                                for i in range(picks.count())), timeout=30_000)
    item = next(picks.item(i) for i in range(picks.count()) if picks.item(i).text().startswith("HF cache"))
    picks.setFocus()
    picks.setCurrentItem(item)
    qtbot.keyClick(picks, Qt.Key.Key_Return)  # Enter opens the pick (a single click only selects it)
    qtbot.waitUntil(lambda: window.session.model_path == snapshot and not window.session.busy, timeout=30_000)
    assert window.session.model_info["parameters"] == 134_515_008

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(smollm2_dir))])
    drop = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                      Qt.KeyboardModifier.NoModifier)
    window.dropEvent(drop)
    qtbot.waitUntil(lambda: window.session.model_path == smollm2_dir and not window.session.busy, timeout=30_000)
    assert window.session.model_info["parameters"] == 134_515_008
    window.close()


def test_open_quantize_q8_and_chat(qtbot, main_window, smollm2_dir, tmp_path):
    window = main_window
    _open(qtbot, window, smollm2_dir)
    rec = window.recommendation
    qtbot.waitUntil(lambda: rec.table.rowCount() > 0, timeout=30_000)
    best = rec.options[0]["format"]
    assert rec.selected_formats() == [best]
    assert rec.table.item(0, 4).text().split(" · ")[0] in ("fits", "tight", "too big")
    assert best in window.quantize.targets()  # the Quantize tab starts from the recommendation

    window.tabs.setCurrentWidget(window.quantize)
    window.quantize.preselect(["gguf:Q8_0"])
    window.quantize.start.click()
    row = window.quantize.job_list.rows[-1]
    qtbot.waitUntil(lambda: row.state.text() in ("done", "failed", "cancelled"), timeout=180_000)
    assert row.state.text() == "done", row.step.text()
    out = tmp_path / "out" / f"{smollm2_dir.name}-Q8_0.gguf"
    assert out.is_file()
    assert row.chat_btn.isVisible() and row.folder_btn.isVisible() and row.eval_btn.isVisible()
    qtbot.waitUntil(lambda: any(Path(r["path"]) == out for r in window.results.rows), timeout=30_000)

    row.chat_btn.click()
    pane = window.chat.left
    qtbot.waitUntil(lambda: pane.current_model() == out, timeout=30_000)
    window.chat.prompt.setText("What is the capital of France?")
    window.chat.send_btn.click()
    qtbot.waitUntil(lambda: "Paris" in pane.reply_text(), timeout=120_000)
    qtbot.waitUntil(lambda: not pane.busy, timeout=60_000)
    assert "Paris" in pane.transcript.toPlainText()
    assert "tokens/s" in pane.transcript.toPlainText()

    window.chat.max_tokens.setValue(2000)
    window.chat.prompt.setText("Tell me a very long story about a lighthouse keeper.")
    window.chat.send_btn.click()
    qtbot.waitUntil(lambda: len(pane.reply_text()) > 10, timeout=60_000)
    window.stop_action.trigger()  # Ctrl+. on the Chat tab stops the reply
    qtbot.waitUntil(lambda: not pane.busy, timeout=5_000)
    assert pane.transcript.toPlainText().rstrip().endswith("stopped")

    # Side by side: the same question to the new Q8_0 file and to the original checkpoint.
    window.chat.max_tokens.setValue(24)
    window.chat.side_by_side.setChecked(True)
    right = window.chat.right
    assert right.isVisible() and right.current_model().resolve() == smollm2_dir.resolve()
    window.chat.prompt.setText("What is the capital of France?")
    window.chat.send_btn.click()
    qtbot.waitUntil(lambda: "Paris" in pane.reply_text() and "Paris" in right.reply_text(), timeout=180_000)
    qtbot.waitUntil(lambda: not pane.busy and not right.busy, timeout=60_000)
    assert "tokens/s" in right.transcript.toPlainText()


def _start_and_wait_for_tensors(qtbot, window, source: Path, target: str):
    _open(qtbot, window, source)
    window.quantize.preselect([target])
    window.quantize.start.click()
    row = window.quantize.job_list.rows[-1]
    # Wait until the child is converting tensors: the heavy part is running.
    qtbot.waitUntil(lambda: "tensor" in row.step.text(), timeout=120_000)
    return row


def test_cancel_leaves_nothing(qtbot, main_window, smollm2_dir, tmp_path):
    window = main_window
    row = _start_and_wait_for_tensors(qtbot, window, smollm2_dir, "gguf:Q4_K_M")
    row.cancel_btn.click()
    qtbot.waitUntil(lambda: not window.queue.busy, timeout=30_000)
    assert row.state.text() == "cancelled"
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []


def test_closing_during_a_job_asks_then_cancels(qtbot, main_window, smollm2_dir, tmp_path):
    window = main_window
    row = _start_and_wait_for_tensors(qtbot, window, smollm2_dir, "gguf:Q6_K")
    asked = []
    window.confirm_quit = lambda: asked.append(True) or False
    window.close()
    assert asked and window.isVisible() and window.queue.busy  # "No" keeps it running
    window.confirm_quit = lambda: asked.append(True) or True
    window.close()
    assert len(asked) == 2 and not window.queue.busy
    assert row.state.text() == "cancelled"
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []


def test_evaluate_fills_results_and_chart(qtbot, main_window, tiny_nochat_gguf, tmp_path):
    import shutil

    window = main_window
    model = tmp_path / "models" / tiny_nochat_gguf.name
    model.parent.mkdir()
    shutil.copy(tiny_nochat_gguf, model)  # the sidecar with the numbers goes beside it
    _open(qtbot, window, model)
    results = window.results
    qtbot.waitUntil(lambda: len(results.rows) == 1, timeout=30_000)
    results.table.selectRow(0)
    results.eval_btn.click()
    row = window.quantize.job_list.rows[-1]
    qtbot.waitUntil(lambda: row.state.text() in ("done", "failed", "cancelled"), timeout=120_000)
    assert row.state.text() == "done", row.step.text()
    qtbot.waitUntil(lambda: results.rows and results.rows[0].get("ppl") is not None, timeout=30_000)
    assert results.table.item(0, 4).text() != "—"
    assert len(results.chart.chart().series()) == 1
