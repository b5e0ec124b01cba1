"""The main window (placeholder until the window's own work lands)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QLabel, QMainWindow


class MainWindow(QMainWindow):
    def __init__(self, model: Path | None = None) -> None:
        super().__init__()
        self.setWindowTitle("QuantDesk")
        text = f"Model: {model}" if model else "Demo model: SmolLM2-135M-Instruct"
        self.setCentralWidget(QLabel(text))
