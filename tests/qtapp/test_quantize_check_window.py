"""The window's quick check: a remembered checkbox, the verdict on the job card, and in Results with a headline."""

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


def test_check_box_is_on_by_default_and_remembered(qtbot, gui_settings):
    from qtapp.views.quantize import QuantizeView

    view = QuantizeView()
    qtbot.addWidget(view)
    assert view.check.isChecked() and view.choice().check is True
    view.check.setChecked(False)
    assert view.choice().check is False
    again = QuantizeView()
    qtbot.addWidget(again)
    assert not again.check.isChecked() and again.choice().check is False


@pytest.mark.slow
def test_verdict_on_the_job_card_and_in_results(qtbot, gui_settings, tmp_path, tiny_dir):
    from engine.artifacts import read_sidecar
    from engine.evaluate.verdict import VERDICTS
    from qtapp.views.results import VERDICT_COLUMN

    window = _window(qtbot)
    window.open_model(tiny_dir)
    qtbot.waitUntil(lambda: window.session.model_path == tiny_dir and bool(window.session.model_info)
                    and not window.session.busy, timeout=60_000)
    quantize = window.quantize
    out = tmp_path / "out"
    quantize.out_dir.setText(str(out))
    quantize.preselect(["gguf:Q8_0"])
    quantize.threads.setValue(2)
    assert quantize.check.isChecked()
    quantize.start.click()
    qtbot.waitUntil(lambda: bool(quantize.job_list.rows) and quantize.job_list.rows[0].ended, timeout=300_000)
    card = quantize.job_list.rows[0]
    assert card.state.text() == "done", card.step.text()
    made = out / "tiny-Q8_0.gguf"
    evaluation = read_sidecar(made).evaluation
    verdict = evaluation["verdict"]
    assert verdict in VERDICTS
    window.show_tab("quantize")
    assert card.verdicts.isVisibleTo(window), card.verdicts.text()
    assert card.verdicts.text() == f"{verdict} — {evaluation['verdict_evidence']}"
    assert card.verdicts.text().startswith(f"{verdict} — Q8_0: same top token")
    assert any(f" check: {verdict} — " in line for line in card.log_lines)

    results = window.results
    window.show_tab("results")
    qtbot.waitUntil(lambda: any(Path(r["path"]) == made for r in results.rows), timeout=60_000)
    row = next(i for i, r in enumerate(results.rows) if Path(r["path"]) == made)
    assert results.table.horizontalHeaderItem(VERDICT_COLUMN).text() == "Verdict"
    cell = results.table.item(row, VERDICT_COLUMN)
    assert cell.text() == verdict and cell.toolTip() == evaluation["verdict_evidence"]
    original = next(i for i, r in enumerate(results.rows) if r.get("original"))
    assert results.table.item(original, VERDICT_COLUMN).text() == "—"
    assert verdict in ("near-lossless", "small loss")  # Q8_0 of the tiny model: KLD near zero
    assert results.headline.isVisibleTo(window)
    assert results.headline.text().startswith("Keep Q8_0: ") and "% smaller than the original" in results.headline.text()


@pytest.mark.slow
def test_cancelling_during_the_check_keeps_the_finished_outputs(qtbot, gui_settings, tmp_path, tiny_dir):
    from engine.artifacts import read_sidecar

    window = _window(qtbot)
    window.open_model(tiny_dir)
    qtbot.waitUntil(lambda: window.session.model_path == tiny_dir and bool(window.session.model_info)
                    and not window.session.busy, timeout=60_000)
    quantize = window.quantize
    out = tmp_path / "out"
    quantize.out_dir.setText(str(out))
    quantize.preselect(["gguf:Q8_0"])
    quantize.threads.setValue(2)
    seen: list[str] = []

    def on_progress(job, event):
        seen.append(event.step)
        if event.step in ("original", "perplexity") and seen.count(event.step) == 1:
            job_list.rows[0].cancel_btn.click()  # as the user: while the check's child scores

    job_list = quantize.job_list
    window.queue.progress.connect(on_progress)
    quantize.start.click()
    qtbot.waitUntil(lambda: bool(job_list.rows) and job_list.rows[0].ended, timeout=300_000)
    card = job_list.rows[0]
    assert {"original", "perplexity"} & set(seen), seen
    assert card.state.text() == "done", card.step.text()
    assert not card.verdicts.text()
    assert any("Quality check cancelled; the outputs are finished and kept." in line for line in card.log_lines)
    made = out / "tiny-Q8_0.gguf"
    assert made.is_file() and "verdict" not in read_sidecar(made).evaluation
