"""The one bridge between the window and the engine.

Every engine call the window makes runs here, on a worker thread (superqt's
``create_worker``); the GUI thread only receives signals. A piece of work is
a callable taking a CancelToken; it may return a value, or a generator that
yields progress (engine Progress events, chat tokens) and returns a value.
Errors arrive as the same one-line sentence the CLI prints.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QElapsedTimer, QEventLoop, QObject, QThreadPool, QTimer, Signal

from engine.errors import JobCancelled, QuantDeskError
from engine.jobs import CancelToken

Work = Callable[[CancelToken], Any]

# Two cores would otherwise mean two pool threads: a quantize job and a chat
# reply would starve the machine panel's refresh.
QThreadPool.globalInstance().setMaxThreadCount(max(8, QThreadPool.globalInstance().maxThreadCount()))

_ACTIVE: set[Task] = set()


@dataclass
class Outcome:
    status: str  # "ok", "error" or "cancelled"
    value: Any = None
    message: str = ""
    detail: str = ""


def one_line(err: BaseException) -> str:
    """The sentence shown to the user, exactly as the CLI would print it."""
    if isinstance(err, QuantDeskError):
        return str(err)
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else 'unexpected error'}"


def _drive(work: Work, cancel: CancelToken):
    try:
        result = work(cancel)
        if inspect.isgenerator(result):
            result = yield from result
    except JobCancelled as err:
        return Outcome("cancelled", message=str(err))
    except Exception as err:  # noqa: BLE001 - every failure reaches the window as one line
        detail = getattr(err, "child_traceback", None) or traceback.format_exc()
        return Outcome("error", message=one_line(err), detail=detail)
    if cancel.cancelled:
        return Outcome("cancelled", value=result, message="Cancelled.")
    return Outcome("ok", value=result)


class Task(QObject):
    """One piece of background work; connect to its signals, then ``start()``."""

    progress = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    ended = Signal(object)  # the Outcome, whatever happened

    def __init__(self, work: Work, name: str = "", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.token = CancelToken()
        self.outcome: Outcome | None = None
        self._work = work
        self._worker = None

    @property
    def running(self) -> bool:
        return self._worker is not None and self.outcome is None

    def start(self) -> Task:
        # superqt loads in ~0.5 s; the first task starts after the first paint.
        from superqt.utils import create_worker

        worker = create_worker(_drive, self._work, self.token, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self.progress.emit)
        worker.returned.connect(self._finish)
        worker.errored.connect(lambda err: self._finish(Outcome("error", message=one_line(err))))
        self._worker = worker
        _ACTIVE.add(self)
        worker.start()
        return self

    def cancel(self) -> None:
        self.token.cancel()

    def _finish(self, outcome: Outcome) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        _ACTIVE.discard(self)
        if outcome.status == "ok":
            self.succeeded.emit(outcome.value)
        elif outcome.status == "cancelled":
            self.cancelled.emit()
        else:
            self.failed.emit(outcome.message)
        self.ended.emit(outcome)


def run_in_background(
    work: Work,
    *,
    done: Callable[[Any], None] | None = None,
    failed: Callable[[str], None] | None = None,
    progress: Callable[[Any], None] | None = None,
    parent: QObject | None = None,
    name: str = "",
) -> Task:
    """Start ``work`` on a worker thread and route its results to the given slots."""
    task = Task(work, name=name, parent=parent)
    if done is not None:
        task.succeeded.connect(done)
    if failed is not None:
        task.failed.connect(failed)
    if progress is not None:
        task.progress.connect(progress)
    return task.start()


def active_tasks() -> list[Task]:
    return list(_ACTIVE)


def wait_until(predicate: Callable[[], bool], timeout_ms: int) -> bool:
    """Run a local event loop until ``predicate()`` or the timeout; for screenshots and quitting."""
    if predicate():
        return True
    loop = QEventLoop()
    clock = QElapsedTimer()
    clock.start()
    poll = QTimer()
    poll.setInterval(20)
    poll.timeout.connect(lambda: (predicate() or clock.elapsed() > timeout_ms) and loop.quit())
    poll.start()
    loop.exec()
    poll.stop()
    return predicate()
