"""Start here: what a first start shows instead of empty tables — the demo, open a model, recent picks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from qtapp.assets import icon
from qtapp.views.widgets import PickList, heading, muted, panel


class StartPanel(QWidget):
    demo_requested = Signal()
    browse_requested = Signal()
    get_requested = Signal()
    open_requested = Signal(Path)

    def __init__(self) -> None:
        super().__init__()
        outer = QVBoxLayout(self)
        outer.addStretch(1)
        row = QHBoxLayout()
        row.addStretch(1)
        frame, layout = panel()
        frame.setMaximumWidth(620)
        row.addWidget(frame, 4)
        row.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(2)

        layout.addWidget(heading("Start here"))
        layout.addWidget(muted(
            "QuantDesk shows what this machine can hold, turns a model into smaller files that fit, "
            "and lets you chat with the result to check it still makes sense."))
        self.demo = QPushButton(icon("start"), "Try the demo model")
        self.demo.setObjectName("Primary")
        self.demo.setMinimumHeight(44)
        self.demo.setToolTip("SmolLM2-135M-Instruct: a small chat model, prepared once from an installed package")
        self.demo.clicked.connect(self._demo_clicked)
        layout.addWidget(self.demo)
        self.demo_note = muted("SmolLM2-135M-Instruct (135 million parameters). The first time it is "
                               "prepared from an installed package, in about a minute.")
        layout.addWidget(self.demo_note)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.hide()
        layout.addWidget(self.progress)
        self.progress_text = muted("")
        self.progress_text.hide()
        layout.addWidget(self.progress_text)

        self.open = QPushButton(icon("open"), "Open a model…")
        self.open.setToolTip("A Hugging Face model folder, a config.json or a GGUF file (Ctrl+O)")
        self.open.clicked.connect(self._browse_clicked)
        layout.addWidget(self.open)
        self.get = QPushButton(icon("open"), "Get from Hugging Face…")
        self.get.setToolTip("Type a model's name, e.g. Qwen/Qwen2.5-1.5B-Instruct: see what fits, then download it")
        self.get.clicked.connect(self._get_clicked)
        layout.addWidget(self.get)
        self.picks_title = QLabel("Models found here (Enter or double-click opens one):")
        layout.addWidget(self.picks_title)
        self.picks = PickList()
        self.picks.setMinimumHeight(90)
        self.picks.open_requested.connect(self.open_requested.emit)
        layout.addWidget(self.picks, 1)
        self.set_choices([])

    def _demo_clicked(self) -> None:
        self.demo_requested.emit()

    def _get_clicked(self) -> None:
        self.get_requested.emit()

    def _browse_clicked(self) -> None:
        self.browse_requested.emit()

    def set_choices(self, entries: list[tuple[str, Path, str]]) -> None:
        """The Hugging Face cache and recent models (the demo has its own button)."""
        self.picks.set_choices(entries)
        self.picks.setVisible(self.picks.count() > 0)
        self.picks_title.setVisible(self.picks.count() > 0)

    def set_preparing(self, preparing: bool) -> None:
        self.demo.setEnabled(not preparing)
        self.demo.setText("Preparing the demo model…" if preparing else "Try the demo model")
        self.progress.setVisible(preparing)
        self.progress_text.setVisible(preparing)
        if preparing:
            self.progress.setValue(0)
            self.progress_text.setText("Starting…")

    def show_progress(self, event: Any) -> None:
        from qtapp.views.jobs import duration

        fraction = getattr(event, "fraction", None)
        if fraction is not None:
            self.progress.setValue(int(1000 * max(0.0, min(1.0, fraction))))
        parts = [getattr(event, "message", "") or ""]
        if getattr(event, "tensor_count", None):
            parts.append(f"tensor {event.tensor_index} of {event.tensor_count}")
        if getattr(event, "eta_s", None) is not None:
            parts.append(f"about {duration(event.eta_s)} left")
        self.progress_text.setText(" · ".join(p for p in parts if p))

    def focus_first(self) -> None:
        self.demo.setFocus(Qt.FocusReason.OtherFocusReason)
