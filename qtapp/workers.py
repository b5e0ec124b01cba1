"""The one bridge between the window and the engine.

Every engine call the window makes runs here, on a worker thread (superqt's
``create_worker``); the GUI thread only receives signals. A piece of work is
a callable taking a CancelToken; it may return a value, or a generator that
yields progress (engine Progress events, chat tokens) and returns a value.
Errors arrive as the same one-line sentence the CLI prints.

Queue jobs (quantize, evaluate) go one step further: ``in_process`` runs the
engine generator in a separate Python process, so nothing the engine does in
Python (reading a 300 MB GGUF back to verify it, importing numpy) can hold
the window's interpreter lock. Cancel is cooperative there first: the job
process sets its CancelToken and the engine removes what it started.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QElapsedTimer, QEventLoop, QObject, QThreadPool, QTimer, Signal

from engine.errors import JobCancelled
from engine.jobs import CancelToken, ChildFailed, job_in_child

Work = Callable[[CancelToken], Any]

# Two cores would otherwise mean two pool threads: a quantize job and a chat
# reply would starve the machine panel's refresh.
QThreadPool.globalInstance().setMaxThreadCount(max(8, QThreadPool.globalInstance().maxThreadCount()))

_ACTIVE: set[Task] = set()
JOB_NICENESS = 10


@dataclass
class Outcome:
    status: str  # "ok", "error" or "cancelled"
    value: Any = None
    message: str = ""
    detail: str = ""


def one_line(err: BaseException) -> str:
    """The sentence shown to the user, exactly as the CLI would print it."""
    from engine.failures import sentence

    return sentence(err)


class Failures(QObject):
    """Where failures go that no caller handles itself, so none is dropped: the window shows them in its banner."""

    message = Signal(str)


_FAILURES: Failures | None = None


def failures() -> Failures:
    global _FAILURES
    if _FAILURES is None:
        _FAILURES = Failures()
    return _FAILURES


def _drive(work: Work, cancel: CancelToken):
    try:
        result = work(cancel)
        if inspect.isgenerator(result):
            result = yield from result
    except JobCancelled as err:
        return Outcome("cancelled", message=str(err))
    except Exception as err:  # noqa: BLE001 - every failure reaches the window as one line
        detail = err.traceback if isinstance(err, ChildFailed) else traceback.format_exc()
        return Outcome("error", message=one_line(err), detail=detail)
    # Work that returned finished: a cancel that arrived after its last check changes
    # nothing it made, so the outcome says what happened, not what was asked.
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


def in_process(job: Callable[..., Any], *args: Any) -> Work:
    """Work that runs ``job(cancel, *args)`` (a generator yielding Progress) in its own process.

    ``job`` and ``args`` must pickle: a module-level function of a Qt-free module.
    The process runs niced (and so do the workers it starts): a desktop app
    should never feel frozen while it works. Cancel, errors and the window
    dying follow the engine's one bridge, ``engine.jobs.job_in_child``.
    """

    def work(cancel: CancelToken):
        return job_in_child(job, *args, cancel=cancel, name="job", nice=JOB_NICENESS)

    return work


def run_in_background(
    work: Work,
    *,
    done: Callable[[Any], None] | None = None,
    failed: Callable[[str], None] | None = None,
    progress: Callable[[Any], None] | None = None,
    parent: QObject | None = None,
    name: str = "",
) -> Task:
    """Start ``work`` on a worker thread and route its results to the given slots.

    Without ``failed``, a failure goes to ``failures()`` (the window's error banner).
    """
    task = Task(work, name=name, parent=parent)
    if done is not None:
        task.succeeded.connect(done)
    task.failed.connect(failed if failed is not None else failures().message)
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

    def check() -> None:
        if predicate() or clock.elapsed() > timeout_ms:
            loop.quit()

    poll.timeout.connect(check)
    poll.start()
    loop.exec()
    poll.stop()
    return predicate()
