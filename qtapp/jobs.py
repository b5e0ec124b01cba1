"""The job queue: one engine job at a time, as state and signals; the Quantize tab only shows it.

Two conversions at once would fight for RAM and cores, so jobs wait their
turn. The queue owns what runs (the pending jobs, the current Task, cancel,
busy); views subscribe to its signals and send back the user's intents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from qtapp.workers import Outcome, Task, Work


@dataclass
class JobSpec:
    """What the queue runs: a title, the engine work, and what to offer when it finishes."""

    title: str
    work: Work
    kind: str = "quantize"  # or "evaluate"
    out_dir: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Job:
    """One entry of the queue; compared by identity, so views can key their rows on it."""

    spec: JobSpec
    state: str = "waiting"  # waiting, running, cancelling, done, cancelled, failed
    outcome: Outcome | None = None

    @property
    def finished(self) -> bool:
        return self.outcome is not None


_STATES = {"ok": "done", "cancelled": "cancelled", "error": "failed"}


class JobQueue(QObject):
    """Runs queued jobs one at a time and says what happens to each."""

    added = Signal(object)  # Job
    started = Signal(object)  # Job
    progress = Signal(object, object)  # Job, the engine's event
    cancelling = Signal(object)  # Job: cancel was asked of the running job
    finished = Signal(object, object)  # Job, Outcome
    removed = Signal(object)  # Job: a finished job the user cleared from the list
    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.jobs: list[Job] = []
        self.pending: list[Job] = []
        self.current: tuple[Job, Task] | None = None

    @property
    def busy(self) -> bool:
        return self.current is not None or bool(self.pending)

    def add(self, spec: JobSpec) -> Job:
        job = Job(spec)
        self.jobs.append(job)
        self.pending.append(job)
        self.added.emit(job)
        self._next()
        self.busy_changed.emit(True)
        return job

    def cancel(self, job: Job | None = None) -> None:
        """Cancel one job (the running one when none is named); a finished job stays as it ended."""
        if job is None and self.current is not None:
            job = self.current[0]
        if job is None or job.finished:
            return
        if job in self.pending:
            self.pending.remove(job)
            self._end(job, Outcome("cancelled", message="Cancelled before it started."))
            self.busy_changed.emit(self.busy)
        elif self.current is not None and self.current[0] is job and job.state != "cancelling":
            job.state = "cancelling"
            self.cancelling.emit(job)
            self.current[1].cancel()

    def clear_finished(self) -> None:
        """Forget finished jobs (their files stay where they were written)."""
        for job in [j for j in self.jobs if j.finished]:
            self.jobs.remove(job)
            self.removed.emit(job)

    def cancel_all(self) -> None:
        for job in list(self.pending):
            self.cancel(job)
        self.cancel()

    def _next(self) -> None:
        if self.current is not None or not self.pending:
            return
        job = self.pending.pop(0)
        task = Task(job.spec.work, name=job.spec.title, parent=self)
        task.progress.connect(lambda event, j=job: self.progress.emit(j, event))
        task.ended.connect(lambda outcome, j=job: self._ended(j, outcome))
        self.current = (job, task)
        job.state = "running"
        self.started.emit(job)
        task.start()

    def _ended(self, job: Job, outcome: Outcome) -> None:
        self.current = None
        self._end(job, outcome)
        self._next()
        self.busy_changed.emit(self.busy)

    def _end(self, job: Job, outcome: Outcome) -> None:
        job.outcome = outcome
        job.state = _STATES.get(outcome.status, "failed")
        self.finished.emit(job, outcome)
