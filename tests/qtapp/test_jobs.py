"""The job queue and the bridge's error rules, on real Tasks, real engine errors and the real window."""

from __future__ import annotations

import pytest

from engine.errors import JobCancelled, QuantDeskError
from engine.jobs import CancelToken, Progress


def _sentence_of(call) -> str:
    with pytest.raises(QuantDeskError) as err:
        call()
    return str(err.value)


def test_machine_detection_failure_reaches_the_banner(qtbot, gui_settings, model_config, monkeypatch):
    """Detection that fails says so, and the recommendation stops waiting for a machine that will not come."""
    import qtapp.session
    from engine.hardware import Overrides, detect_machine
    from qtapp.main_window import MainWindow
    from qtapp.session import NO_MACHINE

    def broken(_cancel: CancelToken):  # the engine's own failure: a RAM size that cannot be
        return detect_machine(overrides=Overrides(ram="0GiB"))

    sentence = _sentence_of(lambda: broken(CancelToken()))
    monkeypatch.setattr(qtapp.session, "_detect_machine", broken)
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(window.banner.isVisible, timeout=30_000)
    assert window.banner.text.text() == sentence

    window.open_model(model_config("llama-2-7b"))  # opening dismisses the banner; the reason comes back
    rec = window.recommendation
    qtbot.waitUntil(lambda: rec.summary.text() == NO_MACHINE, timeout=30_000)
    assert window.banner.isVisible() and window.banner.text.text() == sentence
    assert rec.table.rowCount() == 0


def test_work_without_a_failure_slot_reports_to_the_banner(qtbot, main_window):
    from qtapp.workers import run_in_background

    def work(_cancel: CancelToken):
        from engine.units import parse_size

        return parse_size("lots")

    sentence = _sentence_of(lambda: work(CancelToken()))
    done: list = []
    run_in_background(work, done=done.append, parent=main_window)
    qtbot.waitUntil(main_window.banner.isVisible, timeout=10_000)
    assert main_window.banner.text.text() == sentence and not done


def test_queue_runs_one_job_at_a_time_and_cancels_a_waiting_one(qtbot):
    """The queue alone, without a window: a waiting job cancelled never starts; the running one stops."""
    from qtapp.jobs import JobQueue, JobSpec

    ran: list[str] = []

    def hold(name: str):
        def work(cancel: CancelToken):
            ran.append(name)
            yield Progress(step="convert", fraction=0.5, message=f"{name} is running")
            cancel.wait(30)
            raise JobCancelled(f"{name} stopped; nothing was written.")

        return work

    queue = JobQueue()
    events: list[tuple[str, str]] = []
    queue.progress.connect(lambda job, event: events.append((job.spec.title, event.message)))
    queue.finished.connect(lambda job, outcome: events.append((job.spec.title, outcome.status)))
    first = queue.add(JobSpec("first", hold("first")))
    second = queue.add(JobSpec("second", hold("second")))
    qtbot.waitUntil(lambda: ("first", "first is running") in events, timeout=10_000)
    assert queue.busy and first.state == "running" and second.state == "waiting"

    queue.cancel(second)
    assert second.state == "cancelled" and second.outcome.message == "Cancelled before it started."
    assert first.state == "running" and queue.busy

    with qtbot.waitSignal(queue.busy_changed, timeout=10_000):
        queue.cancel()  # the running one
    assert first.state == "cancelled" and first.outcome.message == "first stopped; nothing was written."
    assert not queue.busy and ran == ["first"]
    assert events[-1] == ("first", "cancelled")


@pytest.mark.slow
def test_cancel_after_the_last_event_still_shows_done(qtbot, main_window, tiny_dir, tmp_path):
    """Cancel pressed after the job's last event, before its outcome is shown: the files are there, so is "done"."""
    from qtapp.jobs import JobSpec
    from tests.fixtures.quantize import quantize_job

    window = main_window
    out = tmp_path / "out"
    cancel_seen: list[bool] = []

    def work(cancel: CancelToken):
        records = yield from quantize_job(tiny_dir, "Q8_0", out, cancel)
        # The job has finished and renamed its file into place; return only once the
        # window's Cancel has arrived, so the cancel is certain to be late.
        cancel_seen.append(cancel.wait(60))
        return records

    def press_cancel_on_last_event(job, event) -> None:
        if getattr(event, "step", "") == "done":
            window.quantize.job_list.row_for(job).cancel_btn.click()

    window.queue.progress.connect(press_cancel_on_last_event)
    window.show_tab("quantize")
    job = window.queue.add(JobSpec("tiny → Q8_0", work, "quantize", out))
    row = window.quantize.job_list.row_for(job)
    qtbot.waitUntil(lambda: job.finished, timeout=180_000)
    assert cancel_seen == [True]  # the cancel reached the work before it returned
    assert "cancel requested" in "\n".join(row.log_lines)
    assert job.state == "done" and row.state.text() == "done", row.step.text()
    assert (out / "tiny-Q8_0.gguf").is_file()
    assert row.chat_btn.isVisible() and row.step.text() == "tiny-Q8_0.gguf"
    assert not window.queue.busy
