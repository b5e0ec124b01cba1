"""The jobs as the user sees them: progress, step and tensor, ETA, cancel and a log per job.

What runs lives in ``qtapp.jobs.JobQueue``; this view follows its signals.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication, QTextCursor
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from engine.units import format_bytes
from qtapp.assets import icon
from qtapp.jobs import Job, JobQueue, JobSpec
from qtapp.views.handoff import HandoffRow
from qtapp.views.widgets import ElidedLabel, muted, panel
from qtapp.workers import Outcome


class JobRow(QWidget):
    cancel_requested = Signal()
    chat_requested = Signal(Path)
    evaluate_requested = Signal(list)
    export_requested = Signal(str, Path)  # "lmstudio" | "ollama" | "llama-server", the GGUF
    retry_requested = Signal()

    def __init__(self, spec: JobSpec) -> None:
        super().__init__()
        self.spec = spec
        self.log_lines: list[str] = [f"{time.strftime('%H:%M:%S')} queued: {spec.title}"]
        self._latest: Any = None
        self._paint_timer = QTimer(self, singleShot=True, interval=100)
        self._paint_timer.timeout.connect(self._paint_progress)
        self.outputs: list[Path] = []
        frame, layout = panel()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(frame)
        top = QHBoxLayout()
        self.title = ElidedLabel(spec.title, Qt.TextElideMode.ElideRight)
        bold = self.title.font()
        bold.setBold(True)
        self.title.setFont(bold)
        self.state = muted("waiting")
        top.addWidget(self.title, 1)
        top.addWidget(self.state)
        layout.addLayout(top)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setFormat("%p%")
        layout.addWidget(self.bar)
        # A download's current file, under the total.
        self.file_bar = QProgressBar()
        self.file_bar.setObjectName("UsageBar")
        self.file_bar.setRange(0, 1000)
        self.file_bar.setTextVisible(False)
        self.file_bar.hide()
        layout.addWidget(self.file_bar)
        info = QHBoxLayout()
        self.step = QLabel("")
        self.step.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.eta = muted("")
        self.eta.setWordWrap(False)
        info.addWidget(self.step, 1)
        info.addWidget(self.eta)
        layout.addLayout(info)
        # The quick check's verdict on each output, with its sentence of evidence.
        self.verdicts = QLabel("")
        self.verdicts.setObjectName("Verdicts")
        self.verdicts.setTextFormat(Qt.TextFormat.PlainText)
        self.verdicts.setWordWrap(True)
        self.verdicts.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.verdicts.hide()
        layout.addWidget(self.verdicts)
        self.where = muted(f"Writing into {spec.out_dir}" if spec.out_dir else "")
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.where.setVisible(bool(spec.out_dir))
        layout.addWidget(self.where)
        # When no file manager can show the folder: its path, to copy.
        self.path_row = QWidget()
        path_box = QHBoxLayout(self.path_row)
        path_box.setContentsMargins(0, 0, 0, 0)
        self.path_note = QLabel("No file manager is set up to open folders here; the folder is:")
        self.path_field = QLineEdit()
        self.path_field.setReadOnly(True)
        self.copy_btn = QPushButton("Copy path")
        self.copy_btn.clicked.connect(self._copy_path)
        path_box.addWidget(self.path_note)
        path_box.addWidget(self.path_field, 1)
        path_box.addWidget(self.copy_btn)
        self.path_row.hide()
        layout.addWidget(self.path_row)
        self._log_view: QPlainTextEdit | None = None
        buttons = QHBoxLayout()
        self.cancel_btn = QPushButton(icon("stop"), "Cancel")
        self.cancel_btn.clicked.connect(self._cancel_clicked)
        self.log_btn = QPushButton(icon("log"), "Log")
        self.log_btn.clicked.connect(self.open_log)
        self.chat_btn = QPushButton(icon("chat"), "Chat with it")
        self.folder_btn = QPushButton(icon("folder"), "Open folder")
        self.eval_btn = QPushButton(icon("evaluate"), "Evaluate")
        self.retry_btn = QPushButton(icon("start"), "Resume" if spec.kind == "get" else "Try again")
        self.retry_btn.setToolTip("Run it again; a download continues from what is already in the cache")
        self.chat_btn.clicked.connect(self._chat_clicked)
        self.folder_btn.clicked.connect(self._open_folder)
        self.eval_btn.clicked.connect(self._evaluate_clicked)
        self.retry_btn.clicked.connect(self._retry_clicked)
        for b in (self.cancel_btn, self.log_btn, self.chat_btn, self.folder_btn, self.eval_btn, self.retry_btn):
            buttons.addWidget(b)
        buttons.addStretch(1)
        for b in (self.chat_btn, self.folder_btn, self.eval_btn, self.retry_btn):
            b.hide()
        layout.addLayout(buttons)
        self.handoff = HandoffRow()
        self.handoff.requested.connect(self.export_requested.emit)
        self.handoff.hide()
        layout.addWidget(self.handoff)

    def _cancel_clicked(self) -> None:
        self.cancel_requested.emit()

    def _chat_clicked(self) -> None:
        if self.outputs:
            self.chat_requested.emit(self.outputs[0])

    def _evaluate_clicked(self) -> None:
        self.evaluate_requested.emit(list(self.outputs))

    def _retry_clicked(self) -> None:
        self.retry_btn.hide()  # the new run has a card of its own
        self.retry_requested.emit()

    def log(self, line: str) -> None:
        self._add_log(f"{time.strftime('%H:%M:%S')} {line}")

    def _add_log(self, text: str) -> None:
        """Keep the line; an open Log window follows the job live, scrolled to the end."""
        self.log_lines.append(text)
        view = self._log_view
        if view is not None:
            view.appendPlainText(text)
            view.moveCursor(QTextCursor.MoveOperation.End)
            view.ensureCursorVisible()

    @property
    def ended(self) -> bool:
        return self.state.text() in ("done", "cancelled", "failed")

    def started(self) -> None:
        self.state.setText("running")
        self.log("started")

    def cancelling(self) -> None:
        self.state.setText("cancelling…")
        self.log("cancel requested")

    def show_progress(self, event: Any) -> None:
        """Log now; paint at most ten times a second (a job may report hundreds of tensors a second)."""
        message = getattr(event, "message", "")
        if message and not getattr(event, "tensor_name", None):
            self.log(f"{getattr(event, 'step', '')}: {message}")
        self._latest = event
        if not self._paint_timer.isActive():
            self._paint_timer.start()

    def _paint_progress(self) -> None:
        event, self._latest = self._latest, None
        if event is None:
            return
        fraction = getattr(event, "fraction", None)
        if fraction is None:
            return
        self.bar.setValue(int(1000 * max(0.0, min(1.0, fraction))))
        extra = getattr(event, "extra", None) or {}
        if extra.get("file_bytes_total"):
            self.file_bar.setValue(int(1000 * min(1.0, extra.get("file_bytes_done", 0) / extra["file_bytes_total"])))
            self.file_bar.setToolTip(f"{extra.get('file')}: {format_bytes(extra.get('file_bytes_done'))} of "
                                     f"{format_bytes(extra['file_bytes_total'])}")
            self.file_bar.show()
        parts = [str(getattr(event, "step", "") or "")]
        if getattr(event, "tensor_count", None):
            parts.append(f"tensor {event.tensor_index}/{event.tensor_count}")
        if getattr(event, "tensor_name", None):
            parts.append(event.tensor_name)
        elif getattr(event, "message", ""):
            parts.append(event.message)
        self.step.setText(" · ".join(p for p in parts if p))
        eta = getattr(event, "eta_s", None)
        self.eta.setText(f"about {duration(eta)} left" if eta is not None else "")

    def finished(self, outcome: Outcome) -> None:
        self._paint_timer.stop()
        self._latest = None
        self.cancel_btn.hide()
        self.file_bar.hide()
        self.eta.setText("")
        if outcome.status == "ok":
            self.outputs = _paths(outcome.value) if self.spec.meta.get("target") != "ollama" else []
        folder = self.folder()
        if folder is not None:
            self.where.setText(f"In {folder}")
            self.where.show()
        if outcome.status == "ok":
            self.bar.setValue(1000)
            self.state.setText("done")
            self.step.setText("In the Hugging Face cache; the model opens now." if self.spec.kind == "get"
                              else ", ".join(p.name for p in self.outputs) or "done")
            lines = _verdict_lines(outcome.value) if self.spec.kind == "quantize" else []
            for line in lines:
                self.log(f"check: {line}")
            self.log("done: " + ", ".join(str(p) for p in self.outputs))
            self.verdicts.setText("\n".join(lines))
            self.verdicts.setVisible(bool(lines))
            offer = self.spec.kind == "quantize" and bool(self.outputs)
            self.chat_btn.setVisible(offer)
            self.eval_btn.setVisible(offer)
            self.folder_btn.setVisible(bool(folder))
            self.handoff.set_paths(self.outputs if offer else [])
            self.handoff.setVisible(bool(self.handoff.paths))
        elif outcome.status == "cancelled":
            self.state.setText("cancelled")
            self.bar.setProperty("state", "cancelled")
            self.bar.setFormat("cancelled")
            self.bar.setStyleSheet("QProgressBar::chunk { background: palette(mid); } "
                                   "QProgressBar { color: palette(placeholder-text); }")
            self.where.setText("Nothing was kept." if self.spec.kind == "quantize" else "")
            self.step.setText(outcome.message or "Cancelled; nothing was written.")
            self.step.setWordWrap(True)
            self.log("cancelled")
            self.retry_btn.setVisible(self.spec.kind == "get")
        else:
            self.state.setText("failed")
            self.state.setStyleSheet("color: #e03131;")
            self.step.setText(outcome.message)
            self.step.setWordWrap(True)
            self.log(f"error: {outcome.message}")
            self.bar.setProperty("state", "failed")
            self.bar.setFormat("failed")
            if outcome.detail:
                self._add_log(outcome.detail)
            self.retry_btn.setVisible(self.spec.kind == "get")

    def open_log(self) -> None:
        dialog = QDialog(self)
        dialog.setWindowTitle(f"Log — {self.spec.title}")
        dialog.resize(720, 420)
        text = QPlainTextEdit("\n".join(self.log_lines))
        text.setReadOnly(True)
        text.moveCursor(QTextCursor.MoveOperation.End)
        QVBoxLayout(dialog).addWidget(text)
        self._log_view = text
        dialog.finished.connect(self._log_closed)
        self.log_dialog = dialog
        dialog.show()

    def _log_closed(self) -> None:
        self._log_view = None

    def folder(self) -> Path | None:
        if self.spec.out_dir is not None:
            return self.spec.out_dir
        if not self.outputs:
            return None
        return self.outputs[0] if self.outputs[0].is_dir() else self.outputs[0].parent

    def _open_folder(self) -> None:
        """Open the folder in the file manager; where none is set up, show its path to copy."""
        folder = self.folder()
        if folder is None:
            return
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            self.path_field.setText(str(folder))
            self.path_row.show()
            self.path_field.setFocus()
            self.path_field.selectAll()

    def _copy_path(self) -> None:
        QGuiApplication.clipboard().setText(self.path_field.text())


class JobList(QWidget):
    """Shows a JobQueue, newest job first; the user's clicks leave as intents."""

    cancel_requested = Signal(object)  # Job
    chat_requested = Signal(Path)
    evaluate_requested = Signal(list)
    export_requested = Signal(str, Path)
    retry_requested = Signal(object)  # Job
    clear_requested = Signal()

    def __init__(self) -> None:
        super().__init__()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        self.empty = muted("No jobs yet. Choose targets above and press Quantize (Ctrl+Enter).")
        top.addWidget(self.empty, 1)
        top.addStretch(0)
        self.clear_btn = QPushButton("C&lear finished")
        self.clear_btn.setToolTip("Remove finished, failed and cancelled jobs from this list (their files stay)")
        self.clear_btn.clicked.connect(self._clear_clicked)
        self.clear_btn.setEnabled(False)
        top.addWidget(self.clear_btn)
        outer.addLayout(top)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        inner = QWidget()
        self.rows_box = QVBoxLayout(inner)
        self.rows_box.setContentsMargins(0, 0, 0, 0)
        self.rows_box.addStretch(1)
        scroll.setWidget(inner)
        outer.addWidget(scroll, 1)
        self.rows: list[JobRow] = []
        self._row_of: dict[Job, JobRow] = {}

    def _clear_clicked(self) -> None:
        self.clear_requested.emit()

    def watch(self, queue: JobQueue) -> None:
        """Follow ``queue``: a row per job, updated from its signals."""
        queue.removed.connect(self._removed)
        queue.added.connect(self._added)
        queue.started.connect(self._started)
        queue.progress.connect(self._progress)
        queue.cancelling.connect(self._cancelling)
        queue.finished.connect(self._finished)

    def row_for(self, job: Job) -> JobRow | None:
        return self._row_of.get(job)

    def _added(self, job: Job) -> None:
        row = JobRow(job.spec)
        row.cancel_requested.connect(lambda j=job: self.cancel_requested.emit(j))
        row.chat_requested.connect(self.chat_requested.emit)
        row.evaluate_requested.connect(self.evaluate_requested.emit)
        row.export_requested.connect(self.export_requested.emit)
        row.retry_requested.connect(lambda j=job: self.retry_requested.emit(j))
        self.rows.append(row)
        self._row_of[job] = row
        self.rows_box.insertWidget(0, row)
        self.empty.hide()

    def _started(self, job: Job) -> None:
        self._row_of[job].started()

    def _progress(self, job: Job, event: Any) -> None:
        self._row_of[job].show_progress(event)

    def _cancelling(self, job: Job) -> None:
        self._row_of[job].cancelling()

    def _finished(self, job: Job, outcome: Outcome) -> None:
        self._row_of[job].finished(outcome)
        self.clear_btn.setEnabled(True)

    def _removed(self, job: Job) -> None:
        row = self._row_of.pop(job, None)
        if row is None:
            return
        self.rows.remove(row)
        row.setParent(None)
        row.deleteLater()
        self.clear_btn.setEnabled(any(r.ended for r in self.rows))
        self.empty.setVisible(not self.rows)


def _paths(value: Any) -> list[Path]:
    """What a job made: a list of outputs (quantize) or one path (a download, a hand-off)."""
    items = value if isinstance(value, (list, tuple)) else ([] if value is None else [value])
    return [Path(getattr(o, "path", o)) for o in items if isinstance(o, (str, Path)) or hasattr(o, "path")]


def _verdict_lines(value: Any) -> list[str]:
    """One line per checked output: its verdict, then the evidence (which starts with the type)."""
    from engine.terminal import one_line

    items = value if isinstance(value, (list, tuple)) else []
    lines = []
    for o in items:
        verdict, evidence = getattr(o, "verdict", None), getattr(o, "verdict_evidence", None)
        if isinstance(verdict, str) and verdict:
            name = Path(getattr(o, "path", "")).name
            lines.append(one_line(f"{verdict} — {evidence}" if evidence else f"{name}: {verdict}", 600))
    return lines


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
