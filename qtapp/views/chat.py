"""Chat: talk to any artifact of the current model (or the original); optionally two side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from qtapp.assets import icon
from qtapp.views.chat_pane import ChatPane
from qtapp.views.widgets import Foldable, heading, muted

NARROW = 900  # below this width, side-by-side panes stack one above the other


class ChatView(QWidget):
    error = Signal(str)
    state_changed = Signal()  # whether Send / Stop can act changed

    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(heading("Chat"))
        top.addStretch(1)
        self.side_by_side = QCheckBox("Side &by side: send each prompt to two models")
        top.addWidget(self.side_by_side)
        self.new_btn = QPushButton("&New chat")
        self.new_btn.setToolTip("Clear the conversation; the model stays loaded (Ctrl+N)")
        self.new_btn.clicked.connect(self.new_chat)
        top.addWidget(self.new_btn)
        layout.addLayout(top)
        self.system = QLineEdit()
        self.system.setPlaceholderText("System prompt (optional), e.g. “You are a concise assistant.”")
        layout.addWidget(self.system)
        self.sampling_box = Foldable("Sampling")
        sampling = QWidget()
        form = QFormLayout(sampling)
        self.temperature = _double(0.0, 2.0, 0.0, 0.05)
        self.top_p = _double(0.0, 1.0, 0.95, 0.01)
        self.top_k = _int(0, 1000, 40)
        self.repeat_penalty = _double(0.5, 2.0, 1.1, 0.01)
        self.max_tokens = _int(1, 32768, 256)
        self.seed = _int(-1, 2**31 - 1, 0)
        self.seed.setSpecialValueText("random")
        form.addRow("Temperature (0 = greedy)", self.temperature)
        form.addRow("Top-p", self.top_p)
        form.addRow("Top-k", self.top_k)
        form.addRow("Repeat penalty", self.repeat_penalty)
        form.addRow("Max new tokens", self.max_tokens)
        form.addRow("Seed", self.seed)
        self.sampling_box.addWidget(sampling)
        layout.addWidget(self.sampling_box)

        self.splitter = splitter = QSplitter(Qt.Orientation.Horizontal)
        self.left = ChatPane("Model A")
        self.right = ChatPane("Model B")
        splitter.addWidget(self.left)
        splitter.addWidget(self.right)
        self.right.hide()
        self.side_by_side.toggled.connect(self.right.setVisible)
        layout.addWidget(splitter, 1)

        row = QHBoxLayout()
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("Ask something, e.g. What is the capital of France?")
        self.prompt.returnPressed.connect(self.send)
        self.prompt.textChanged.connect(lambda _t: self._update_send())
        self.send_btn = QPushButton(icon("chat"), "Send")
        self.send_btn.setObjectName("Primary")
        self.send_btn.clicked.connect(self.send)
        self.stop_btn = QPushButton(icon("stop"), "Stop")
        self.stop_btn.setToolTip("Stop the reply (Ctrl+.)")
        self.stop_btn.clicked.connect(self.stop)
        self.stop_btn.setEnabled(False)
        row.addWidget(self.prompt, 1)
        row.addWidget(self.send_btn)
        row.addWidget(self.stop_btn)
        layout.addLayout(row)
        self.hint = muted("")
        layout.addWidget(self.hint)
        for pane in self.panes():
            pane.busy_changed.connect(self._busy_changed)
            pane.error.connect(self.error.emit)
            pane.model_changed.connect(self._update_send)
        self.side_by_side.toggled.connect(lambda _on: self._update_send())
        self._update_send()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        narrow = self.width() < NARROW
        self.splitter.setOrientation(Qt.Orientation.Vertical if narrow else Qt.Orientation.Horizontal)

    def can_send(self) -> bool:
        return (not self.busy and bool(self.prompt.text().strip())
                and all(p.current_model() is not None for p in self.active_panes()))

    def _update_send(self) -> None:
        """Send acts only when there is a model to talk to; the typed text stays until it is sent."""
        has_model = all(p.current_model() is not None for p in self.active_panes())
        self.send_btn.setEnabled(has_model and not self.busy)
        if not has_model:
            self.hint.setText("No model to chat with yet: open a model (the original is listed once it is read), "
                              "or quantize one. What you type stays here.")
        elif self.busy:
            self.hint.setText("Replying… Stop (Ctrl+.) ends the reply early.")
        else:
            self.hint.setText("Enter sends; Ctrl+N starts a new chat.")
        self.state_changed.emit()

    def new_chat(self) -> None:
        for pane in self.panes():
            pane.new_chat()
    def panes(self) -> list[ChatPane]:
        return [self.left, self.right]

    def active_panes(self) -> list[ChatPane]:
        return [self.left, self.right] if self.side_by_side.isChecked() else [self.left]

    def set_models(self, choices: list[tuple[str, Path]], prefer: Path | None = None) -> None:
        """Left: the newest output unless one was asked for; right: the original, to compare against."""
        newest = choices[-1][1] if choices else None
        before = {str(self.left.model.itemData(i)) for i in range(self.left.model.count())}
        made = [path for _label, path in choices if str(path) not in before]
        if before and made and prefer is None and not self.left.busy:
            prefer = made[-1]  # an output that just appeared is the one to try
        self.left.set_models(choices, prefer, default=newest)
        self.right.set_models(choices, None, default=choices[0][1] if choices else None)
        self._update_send()

    def sampling(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature.value(),
            "top_p": self.top_p.value(),
            "top_k": self.top_k.value(),
            "repeat_penalty": self.repeat_penalty.value(),
            "max_tokens": self.max_tokens.value(),
            "seed": None if self.seed.value() < 0 else self.seed.value(),
        }

    def send(self) -> None:
        text = self.prompt.text().strip()
        if not text or any(p.busy for p in self.active_panes()):
            return
        if any(p.current_model() is None for p in self.active_panes()):
            self._update_send()
            return  # nothing to send it to: keep what was typed
        self.prompt.clear()
        for pane in self.active_panes():
            pane.send(text, self.system.text().strip(), self.sampling())

    def stop(self) -> None:
        for pane in self.panes():
            pane.stop()

    @property
    def busy(self) -> bool:
        return any(p.busy for p in self.panes())

    def _busy_changed(self, _busy: bool) -> None:
        self.stop_btn.setEnabled(self.busy)
        self._update_send()


def _double(lo: float, hi: float, value: float, step: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setDecimals(2)
    box.setValue(value)
    return box


def _int(lo: int, hi: int, value: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setValue(value)
    return box
