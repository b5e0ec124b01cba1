"""Model panel: open a model (folder, config.json, GGUF), one-click picks, the inspection summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.units import format_bytes
from qtapp import settings
from qtapp.assets import icon
from qtapp.views.widgets import ElidedLabel, PickList, heading, muted, panel

DEMO_LABEL = "Demo model: SmolLM2-135M-Instruct"


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
        self.picks = PickList()
        self.picks.setMaximumHeight(120)
        self.picks.open_requested.connect(self.open_requested.emit)
        layout.addWidget(self.picks)

        self.title = ElidedLabel("No model open yet.")
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
        """Demo model, models in the Hugging Face cache, then recently opened ones; each once."""
        self.picks.set_choices(pick_entries(demo, cached))

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
    def show_preparing_demo(self) -> None:
        self.title.setText("Preparing the demo model…")
        self._clear_form()
        self.problems.hide()

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
        self.title.setToolTip(f"{info.get('name') or path.name}\n{path}")
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
            ("Attention", attention_text(info.get("attention_heads"), info.get("kv_heads"))),
            ("Chat template", _yes_no(info.get("has_chat_template"))),
            ("Tokenizer", _yes_no(info.get("has_tokenizer"))),
            ("GGUF", None if info.get("kind") == "gguf" else
             _yes_no(info.get("gguf_convertible"), "llama.cpp can convert it", "llama.cpp cannot convert it")),
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


def attention_text(heads: Any, kv_heads: Any) -> str | None:
    """Plain words for the attention layout, e.g. "Grouped-query attention (9 heads, 3 KV heads)"."""
    if not heads:
        return None
    if not kv_heads or kv_heads == heads:
        return f"Multi-head attention ({heads} heads)"
    if kv_heads == 1:
        return f"Multi-query attention ({heads} heads, 1 KV head)"
    return f"Grouped-query attention ({heads} heads, {kv_heads} KV heads)"


def pick_entries(demo: Path | None, cached: list[tuple[str, Path]],
                 with_demo: bool = True) -> list[tuple[str, Path, str]]:
    """The picks as (text, path, tooltip): demo, Hugging Face cache, recent; the list drops repeats."""
    entries: list[tuple[str, Path, str]] = []
    if demo is not None and with_demo:
        entries.append((DEMO_LABEL, demo, "Prepared once from an installed package"))
    for name, path in cached:
        entries.append((f"HF cache: {name}", path, str(path)))
    for recent in settings.recent_models():
        if demo is not None and Path(recent) == demo:
            if with_demo:
                continue
            entries.append((DEMO_LABEL, demo, recent))
            continue
        entries.append((f"Recent: {Path(recent).name}", Path(recent), recent))
    return entries
