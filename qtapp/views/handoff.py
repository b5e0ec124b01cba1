"""Handing a GGUF on to the chat apps people already use: the three actions, the command to copy, LM Studio's folder.

The views only ask; the controller plans each hand-off with the engine and either
queues it as a job (LM Studio, Ollama when installed) or answers with a command.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from qtapp.views.widgets import fit_height, heading, muted

# (target, button text, what it does)
TARGETS = (
    ("lmstudio", "Use in LM Studio", "Place the file in LM Studio's models folder (a hard link: no extra space)"),
    ("ollama", "Add to Ollama", "Create an Ollama model from the file, with its chat template and sampling defaults"),
    ("llama-server", "Serve with llama.cpp", "The llama-server command with the context and GPU layers for this machine"),
)


def is_gguf(path: Path | str) -> bool:
    return str(path).lower().endswith(".gguf")


class HandoffRow(QWidget):
    """The three actions for a set of GGUF files: one file, a click acts; several, each button opens a menu."""

    requested = Signal(str, Path)  # target, the file

    def __init__(self, caption: str = "Hand on:") -> None:
        super().__init__()
        box = QHBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        self.caption = muted(caption)
        self.caption.setWordWrap(False)
        box.addWidget(self.caption)
        self.buttons: dict[str, QPushButton] = {}
        for target, text, tip in TARGETS:
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(lambda _c=False, t=target: self._clicked(t))
            self.buttons[target] = button
            box.addWidget(button)
        box.addStretch(1)
        self.paths: list[Path] = []

    def set_paths(self, paths: list[Path]) -> None:
        self.paths = [Path(p) for p in paths if is_gguf(p)]
        for target, button in self.buttons.items():
            button.setEnabled(bool(self.paths))
            if len(self.paths) > 1:
                menu = QMenu(button)
                for p in self.paths:
                    action = menu.addAction(p.name)
                    action.triggered.connect(lambda _c=False, t=target, f=p: self.requested.emit(t, f))
                button.setMenu(menu)
            else:
                button.setMenu(None)

    def _clicked(self, target: str) -> None:
        if len(self.paths) == 1:
            self.requested.emit(target, self.paths[0])


class CommandDialog(QDialog):
    """A command to run in a terminal, with what it does and a Copy button."""

    def __init__(self, title: str, text: str, command: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setMinimumWidth(640)
        layout = QVBoxLayout(self)
        layout.addWidget(heading(title))
        self.text = muted(text)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.text)
        self.command = QPlainTextEdit(command)
        self.command.setReadOnly(True)
        self.command.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        mono = self.command.font()
        mono.setFamily("monospace")
        mono.setStyleHint(mono.StyleHint.Monospace)
        self.command.setFont(mono)
        lines = max(2, min(6, len(command) // 70 + 2))
        self.command.setFixedHeight(self.command.fontMetrics().lineSpacing() * lines + 16)
        layout.addWidget(self.command)
        buttons = QHBoxLayout()
        self.copied = muted("")
        buttons.addWidget(self.copied, 1)
        self.copy_btn = QPushButton("&Copy command")
        self.copy_btn.clicked.connect(self.copy)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        buttons.addWidget(self.copy_btn)
        buttons.addWidget(close)
        layout.addLayout(buttons)
        self.copy_btn.setDefault(True)
        self.copy_btn.setFocus()
        self.resize(max(self.minimumWidth(), self.width()), self.height())
        fit_height(self)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.command.toPlainText())
        self.copied.setText("Copied; paste it into a terminal.")


class LmStudioFolderDialog(QDialog):
    """Where "Use in LM Studio" puts files: LM Studio's own folder, or one the user names."""

    def __init__(self, current: str, default: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("LM Studio models folder")
        self.setMinimumWidth(560)
        layout = QVBoxLayout(self)
        layout.addWidget(muted(
            "QuantDesk places files in LM Studio's models folder as publisher/repository/file.gguf. "
            f"Leave this empty to use the folder LM Studio's settings name ({default})."))
        row = QHBoxLayout()
        label = QLabel("&Folder")
        self.folder = QLineEdit(current)
        self.folder.setPlaceholderText(default)
        label.setBuddy(self.folder)
        browse = QPushButton("&Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(label)
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        layout.addLayout(row)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        ok = QPushButton("OK")
        ok.setDefault(True)
        ok.clicked.connect(self.accept)
        cancel = QPushButton("Cancel")
        cancel.clicked.connect(self.reject)
        buttons.addWidget(ok)
        buttons.addWidget(cancel)
        layout.addLayout(buttons)

    def _browse(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "LM Studio models folder",
                                                  self.folder.text() or self.folder.placeholderText())
        if chosen:
            self.folder.setText(chosen)

    def chosen(self) -> str:
        return self.folder.text().strip()
