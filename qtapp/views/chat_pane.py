"""One chat pane: a model picker, CPU/CUDA, and a transcript that streams the reply."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QTextBrowser, QVBoxLayout, QWidget

from qtapp.chat_link import PaneChat, stats_line
from qtapp.views.widgets import muted
from qtapp.workers import Outcome, Task, wait_until

_PATH_ROLE = Qt.ItemDataRole.UserRole


class ChatPane(QWidget):
    busy_changed = Signal(bool)
    error = Signal(str)
    model_changed = Signal()

    def __init__(self, title: str) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        top.addWidget(QLabel(f"<b>{title}</b>"))
        self.model = QComboBox()
        self.model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model.setMinimumContentsLength(14)
        self.model.currentIndexChanged.connect(lambda _i: self.model_changed.emit())
        self.device = QComboBox()
        self.device.addItems(["CPU", "CUDA"])
        top.addWidget(self.model, 1)
        top.addWidget(self.device)
        layout.addLayout(top)
        self.transcript = QTextBrowser()
        self.transcript.setObjectName("Transcript")
        self.transcript.setOpenExternalLinks(False)
        layout.addWidget(self.transcript, 1)
        self.loading = muted("")  # "Loading …" while the model loads; never left in the transcript
        self.loading.hide()
        layout.addWidget(self.loading)
        self.slot = PaneChat()
        self._task: Task | None = None
        self._reply = ""

    # --- choices ---------------------------------------------------------
    def set_models(self, choices: list[tuple[str, Path]], prefer: Path | None = None,
                   default: Path | None = None) -> None:
        current = self.current_model()
        self.model.blockSignals(True)
        self.model.clear()
        for label, path in choices:
            self.model.addItem(label, str(path))
            self.model.setItemData(self.model.count() - 1, str(path), Qt.ItemDataRole.ToolTipRole)
        self.model.blockSignals(False)
        want = prefer or current or default
        if want is not None:
            self.select_model(want)

    def select_model(self, path: Path) -> None:
        index = self.model.findData(str(path))
        if index >= 0:
            self.model.setCurrentIndex(index)

    def current_model(self) -> Path | None:
        data = self.model.currentData()
        return Path(data) if data else None

    def set_cuda_available(self, available: bool) -> None:
        item = self.device.model().item(1)
        item.setEnabled(available)
        item.setToolTip("" if available else "No CUDA GPU found on this machine.")

    # --- conversation ----------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._task is not None

    def send(self, prompt: str, system: str, sampling: dict[str, Any]) -> None:
        path = self.current_model()
        if path is None or self.busy:
            return
        key = (str(path), self.device.currentText().lower())
        if key != self.slot.key:
            self.loading.setText(f"Loading {path.name} on {key[1].upper()}…")
            self.loading.show()
        self._append(f"<b>You:</b> {html.escape(prompt)}")
        self._append(f"<b>{html.escape(path.name)}:</b> ")
        self._reply = ""
        self._task = Task(self.slot.reply_work(key, prompt, system, sampling), name="chat", parent=self)
        self._task.progress.connect(self._token)
        self._task.ended.connect(self._ended)
        self._task.start()
        self.busy_changed.emit(True)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def close_model(self) -> None:
        """Stop any reply, then free the model (the window is closing)."""
        self.stop()
        wait_until(lambda: not self.busy, 5000)
        self.slot.close()

    def new_chat(self) -> None:
        """Start over: the transcript and the model's memory of the conversation go; the model stays loaded."""
        if self.busy:
            return
        self.transcript.clear()
        self._reply = ""
        self.slot.forget()

    def _token(self, piece: Any) -> None:
        if isinstance(piece, str):
            self.loading.hide()
            self._reply += piece
            self._insert_text(piece)

    def _ended(self, outcome: Outcome) -> None:
        self._task = None
        self.loading.hide()
        if outcome.status == "error":
            self._append(f"<span style='color:#e03131'>{html.escape(outcome.message)}</span>")
            self.error.emit(outcome.message)
        else:
            reply = outcome.value
            for notice in getattr(reply, "notices", None) or []:
                self._note(notice)
            self._append(f"<span style='color:gray; font-size:small'>{html.escape(stats_line(reply))}</span>")
        self.busy_changed.emit(False)

    def reply_text(self) -> str:
        return self._reply

    def _note(self, text: str) -> None:
        self._append(f"<span style='color:gray'>{html.escape(text)}</span>")

    def _append(self, fragment: str) -> None:
        """A new paragraph at the end of the transcript."""
        cursor = self.transcript.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        if not self.transcript.document().isEmpty():
            cursor.insertBlock()
        cursor.setCharFormat(QTextCharFormat())
        cursor.insertHtml(fragment)
        self.transcript.setTextCursor(cursor)
        self.transcript.ensureCursorVisible()

    def _insert_text(self, text: str) -> None:
        """Streamed reply text, plain, at the end of the current paragraph."""
        cursor = self.transcript.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text, QTextCharFormat())
        self.transcript.setTextCursor(cursor)
        self.transcript.ensureCursorVisible()
