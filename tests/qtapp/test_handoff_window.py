"""Handing a GGUF output on from the window: LM Studio's folder layout in a temporary home, the Ollama
command where Ollama is not installed, and the llama-server command sized by the engine. Real files,
real links, the real window."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from engine.artifacts import write_sidecar


@pytest.fixture
def output(tmp_path: Path, tiny_nochat_gguf: Path) -> Path:
    """A GGUF QuantDesk made from tiny-nochat, in the window's output folder (hard-linked, with its record)."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    dest = out / "tiny-Q8_0.gguf"
    os.link(tiny_nochat_gguf, dest)
    return dest


@pytest.fixture
def window(qtbot, main_window, output: Path, tiny_nochat_dir: Path):
    """The window with tiny-nochat open and its GGUF output listed (and selected) in Results."""
    write_sidecar(output, format="gguf:Q8_0", source=tiny_nochat_dir, source_name="tiny")
    main_window.open_model(tiny_nochat_dir)
    results = main_window.results
    qtbot.waitUntil(lambda: any(Path(r["path"]) == output for r in results.rows), timeout=60_000)
    main_window.show_tab("results")
    row = next(i for i, r in enumerate(results.rows) if Path(r["path"]) == output)
    results.table.selectRow(row)
    assert results.handoff.paths == [output]
    return main_window


def test_use_in_lmstudio_places_the_file_in_its_layout(qtbot, window, output: Path, tmp_path: Path):
    home = tmp_path / "home"  # HOME for this test (gui_settings)
    buttons = window.results.handoff.buttons
    assert all(b.isEnabled() for b in buttons.values())
    buttons["lmstudio"].click()
    qtbot.waitUntil(lambda: bool(window.queue.jobs) and window.queue.jobs[-1].finished, timeout=60_000)
    job = window.queue.jobs[-1]
    assert job.state == "done", job.outcome.message
    target = home / ".lmstudio" / "models" / "quantdesk" / "tiny-GGUF" / "tiny-Q8_0.gguf"
    assert target.is_file() and os.path.samefile(target, output)  # a hard link: no extra space
    assert window.banner.isVisible() and window.banner.objectName() == "InfoBanner"
    assert str(target) in window.banner.text.text()
    card = window.quantize.job_list.row_for(job)
    assert card.state.text() == "done" and card.folder() == target.parent

    # The models folder setting wins over LM Studio's own.
    from qtapp import settings

    mine = tmp_path / "my-lmstudio-models"
    settings.set_lmstudio_models_dir(str(mine))
    window.show_tab("results")
    buttons["lmstudio"].click()
    qtbot.waitUntil(lambda: len(window.queue.jobs) == 2 and window.queue.jobs[-1].finished, timeout=60_000)
    assert window.queue.jobs[-1].state == "done", window.queue.jobs[-1].outcome.message
    assert os.path.samefile(mine / "quantdesk" / "tiny-GGUF" / "tiny-Q8_0.gguf", output)


def test_add_to_ollama_without_ollama_shows_the_command(qtbot, window, output: Path, monkeypatch):
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and not (Path(p) / "ollama").exists())
    monkeypatch.setenv("PATH", path)
    assert shutil.which("ollama") is None
    window.results.handoff.buttons["ollama"].click()
    qtbot.waitUntil(lambda: window.command_dialog is not None and window.command_dialog.isVisible(), timeout=30_000)
    dialog = window.command_dialog
    modelfile = output.with_name(output.name + ".Modelfile")
    command = dialog.command.toPlainText()
    assert command == f"ollama create tiny:q8_0 -f {modelfile}"
    assert modelfile.is_file() and "FROM ./tiny-Q8_0.gguf" in modelfile.read_text()
    assert "not installed" in dialog.text.text()
    assert not window.queue.jobs  # nothing to run here
    dialog.copy_btn.click()
    from PySide6.QtGui import QGuiApplication

    assert QGuiApplication.clipboard().text() == command


def test_serve_with_llama_cpp_shows_the_engines_command(qtbot, window, output: Path):
    from engine.export import server_command

    expected = server_command(output)
    window.results.handoff.buttons["llama-server"].click()
    qtbot.waitUntil(lambda: window.command_dialog is not None and window.command_dialog.isVisible(), timeout=30_000)
    command = window.command_dialog.command.toPlainText()
    assert command == expected.command
    assert f" -c {expected.context} " in command and f" -ngl {expected.gpu_layers} " in command
    assert f"-c {expected.context}" in window.command_dialog.text.text()


@pytest.mark.slow
def test_a_finished_quantize_job_offers_the_hand_off(qtbot, main_window, tiny_dir: Path, tmp_path: Path):
    """The journey's end: quantize in the window, then Use in LM Studio from the job's card."""
    window = main_window
    window.open_model(tiny_dir)
    qtbot.waitUntil(lambda: bool(window.session.model_info) and not window.session.busy, timeout=60_000)
    window.quantize.preselect(["gguf:Q8_0"])
    window.show_tab("quantize")
    window.quantize.start.click()
    qtbot.waitUntil(lambda: bool(window.queue.jobs) and window.queue.jobs[-1].finished, timeout=300_000)
    job = window.queue.jobs[-1]
    assert job.state == "done", job.outcome.message
    card = window.quantize.job_list.row_for(job)
    made = tmp_path / "out" / "tiny-Q8_0.gguf"
    assert card.handoff.isVisible() and card.handoff.paths == [made]
    card.handoff.buttons["lmstudio"].click()
    qtbot.waitUntil(lambda: len(window.queue.jobs) == 2 and window.queue.jobs[-1].finished, timeout=60_000)
    assert window.queue.jobs[-1].state == "done", window.queue.jobs[-1].outcome.message
    target = tmp_path / "home" / ".lmstudio" / "models" / "quantdesk" / "tiny-GGUF" / "tiny-Q8_0.gguf"
    assert os.path.samefile(target, made)


def test_a_large_copy_into_lmstudio_is_asked_first(qtbot, window, output: Path, tmp_path: Path):
    """Where a hard link is impossible (another disk) and the file is large, the window asks before copying."""
    import dataclasses

    from engine.export import plan_lmstudio

    questions: list[str] = []
    answers = [False, True]
    window.confirm_copy = lambda question: (questions.append(question), answers.pop(0))[1]
    plan = dataclasses.replace(plan_lmstudio(output, tmp_path / "other-disk"), method="copy", size_bytes=3 * 1024**3)
    assert plan.large
    window.jobs._lmstudio_planned(plan)  # as the engine's plan arrives from the worker
    assert len(questions) == 1 and "3.0 GiB" in questions[0] and "copied" in questions[0]
    assert not window.queue.jobs and not plan.target.exists()  # declined: nothing copied
    window.jobs._lmstudio_planned(plan)
    qtbot.waitUntil(lambda: bool(window.queue.jobs) and window.queue.jobs[-1].finished, timeout=60_000)
    assert window.queue.jobs[-1].state == "done", window.queue.jobs[-1].outcome.message
    assert plan.target.read_bytes() == output.read_bytes() and not os.path.samefile(plan.target, output)
