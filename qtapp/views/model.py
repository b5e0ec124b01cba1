"""Model panel: open a model (folder, config.json, GGUF), one-click picks, the inspection summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.units import format_bytes
from qtapp import settings
from qtapp.assets import icon
from qtapp.views.widgets import heading, muted, panel

_PATH_ROLE = Qt.ItemDataRole.UserRole


class ModelPanel(QWidget):
    open_requested = Signal(Path)

    def __init__(self) -> None:
        super().__init__()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        frame, layout = panel()
        outer.addWidget(frame)
        layout.addWidget(heading("Model"))
        buttons = QHBoxLayout()
        self.open_folder = QPushButton(icon("open"), "Open folder…")
        self.open_folder.setToolTip("A Hugging Face model folder (Ctrl+O)")
        self.open_file = QPushButton("Open file…")
        self.open_file.setToolTip("A config.json (plan before downloading) or a .gguf file")
        self.open_folder.clicked.connect(self._pick_folder)
        self.open_file.clicked.connect(self._pick_file)
        buttons.addWidget(self.open_folder)
        buttons.addWidget(self.open_file)
        layout.addLayout(buttons)
        layout.addWidget(muted("…or drop a folder or file on the window, or pick one:"))
        self.picks = QListWidget()
        self.picks.setMaximumHeight(120)
        self.picks.itemClicked.connect(self._picked)
        layout.addWidget(self.picks)

        self.title = QLabel("No model open yet.")
        self.title.setWordWrap(True)
        self.title.setObjectName("Heading")
        layout.addWidget(self.title)
        self.form = QFormLayout()
        self.form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.DontWrapRows)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        layout.addLayout(self.form)
        self.problems = QLabel()
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet("color: #e03131;")
        self.problems.hide()
        layout.addWidget(self.problems)
        self._choices: list[tuple[str, Path]] = []

    # --- picks -----------------------------------------------------------
    def set_choices(self, demo: Path | None, cached: list[tuple[str, Path]]) -> None:
        """Demo model, models in the Hugging Face cache, then recently opened ones."""
        self.picks.clear()
        if demo is not None:
            self._add_pick("Demo model: SmolLM2-135M-Instruct", demo, "Prepared once from an installed package")
        for name, path in cached:
            self._add_pick(f"HF cache: {name}", path, str(path))
        for recent in settings.recent_models():
            self._add_pick(f"Recent: {Path(recent).name}", Path(recent), recent)

    def _add_pick(self, text: str, path: Path, tip: str) -> None:
        item = QListWidgetItem(text)
        item.setData(_PATH_ROLE, str(path))
        item.setToolTip(tip)
        self.picks.addItem(item)

    def _picked(self, item: QListWidgetItem) -> None:
        self.open_requested.emit(Path(item.data(_PATH_ROLE)))

    def _pick_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a model folder", settings.last_open_folder())
        if folder:
            self.open_requested.emit(Path(folder))

    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open config.json or a GGUF file", settings.last_open_folder(),
                                              "Models (config.json *.gguf);;All files (*)")
        if path:
            self.open_requested.emit(Path(path))

    # --- summary ---------------------------------------------------------
    def show_loading(self, path: Path) -> None:
        self.title.setText(f"Reading {path.name}…")
        self._clear_form()
        self.problems.hide()

    def show_failed(self, path: Path) -> None:
        self.title.setText(f"Could not open {path.name}")
        self._clear_form()

    def show_info(self, path: Path, info: dict[str, Any]) -> None:
        """Render an inspection report shaped like ``quantdesk inspect --json``."""
        self.title.setText(info.get("name") or path.name)
        self.title.setToolTip(str(path))
        self._clear_form()
        params = info.get("parameters")
        rows = [
            ("Kind", {"hf": "Hugging Face folder", "config": "config.json only", "gguf": "GGUF file"}.get(
                info.get("kind", ""), info.get("kind", ""))),
            ("Architecture", info.get("architecture")),
            ("Parameters", f"{params:,}" if isinstance(params, int) else params),
            ("Weights", info.get("dtype")),
            ("On disk", format_bytes(info["bytes_on_disk"]) if info.get("bytes_on_disk") else None),
            ("Context", f"{info['context_length']:,} tokens" if info.get("context_length") else None),
            ("Layers", info.get("layers")),
            ("Heads / KV heads", _pair(info.get("attention_heads"), info.get("kv_heads"))),
            ("Chat template", _yes_no(info.get("has_chat_template"))),
            ("Tokenizer", _yes_no(info.get("has_tokenizer"))),
            ("GGUF converter", _yes_no(info.get("gguf_convertible"), "supports it", "does not support it")),
        ]
        for label, value in rows:
            if value not in (None, ""):
                text = QLabel(str(value))
                text.setWordWrap(True)
                self.form.addRow(label, text)
        problems = info.get("problems") or info.get("warnings") or []
        self.problems.setText("\n".join(f"⚠ {p}" for p in problems))
        self.problems.setVisible(bool(problems))

    def _clear_form(self) -> None:
        while self.form.rowCount():
            self.form.removeRow(0)


def _yes_no(value: Any, yes: str = "yes", no: str = "missing") -> str | None:
    if value is None:
        return None
    return yes if value else no


def _pair(a: Any, b: Any) -> str | None:
    if a is None and b is None:
        return None
    return f"{a if a is not None else '?'} / {b if b is not None else '?'}"
