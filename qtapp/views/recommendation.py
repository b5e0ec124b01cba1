"""Recommendation: ranked options with size, peak memory at a chosen context, fit against this machine."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.formats import FORMATS
from engine.units import format_bytes
from qtapp.views.widgets import heading, muted

FIT_TEXT = {"fits": "fits", "tight": "tight", "no": "does not fit"}
FIT_COLOUR = {"fits": "#2f9e44", "tight": "#e67700", "no": "#e03131"}
COLUMNS = ["Format", "File size", "Peak memory", "Runs on", "Fit", "Why"]


class RecommendationView(QWidget):
    context_changed = Signal(int)
    chosen = Signal(list)  # format ids the user (or the ranking) picked

    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(heading("What to turn it into"))
        top.addStretch(1)
        top.addWidget(QLabel("Context length"))
        self.context = QSpinBox()
        self.context.setRange(256, 1_048_576)
        self.context.setSingleStep(1024)
        self.context.setValue(4096)
        self.context.setSuffix(" tokens")
        self.context.setToolTip("The longest conversation you plan to hold; the KV cache grows with it.")
        top.addWidget(self.context)
        layout.addLayout(top)
        self.summary = muted("Open a model to see which formats fit this machine.")
        layout.addWidget(self.summary)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(True)
        header = self.table.horizontalHeader()
        for col in range(len(COLUMNS) - 1):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        layout.addWidget(self.table, 1)
        self.hint = muted("Best first. The Quantize tab starts with the three best options that fit; "
                          "select rows here (Ctrl+click for several) to choose others.")
        layout.addWidget(self.hint)
        self.options: list[dict[str, Any]] = []
        self._debounce = QTimer(self, singleShot=True, interval=300)
        self._debounce.timeout.connect(self._emit_context)
        self.context.valueChanged.connect(lambda _v: self._debounce.start())
        self.table.itemSelectionChanged.connect(self._selection_changed)

    def _emit_context(self) -> None:
        self.context_changed.emit(self.context.value())

    def set_max_context(self, n: int | None) -> None:
        if n:
            self.context.blockSignals(True)
            self.context.setMaximum(int(n))
            self.context.blockSignals(False)

    def set_context(self, n: int) -> None:
        self.context.blockSignals(True)
        self.context.setValue(int(n))
        self.context.blockSignals(False)

    def clear(self, text: str) -> None:
        self.options = []
        self.table.setRowCount(0)
        self.summary.setText(text)

    def show_recommendation(self, rec: dict[str, Any]) -> None:
        """Render ``quantdesk recommend --json``: options best first."""
        self.options = list(rec.get("options") or [])
        if rec.get("context"):
            self.set_context(rec["context"])
        machine = rec.get("machine") or {}
        lines = [rec.get("summary") or "", *(rec.get("notes") or [])]
        self.summary.setText(" ".join(line for line in lines if line))
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.options))
        for row, opt in enumerate(self.options):
            fmt = FORMATS.get(opt.get("format", ""))
            label = opt.get("label") or (fmt.label if fmt else opt.get("format", ""))
            cells = [label, format_bytes(opt.get("size_bytes")), format_bytes(opt.get("peak_bytes")),
                     str(opt.get("device", "")), None, _why(opt)]
            for col, text in enumerate(cells):
                if text is not None:
                    item = QTableWidgetItem(text)
                    item.setToolTip(text)
                    if opt.get("available") is False:
                        item.setForeground(self.palette().placeholderText())
                    self.table.setItem(row, col, item)
            self.table.setCellWidget(row, 4, _fit_bar(opt, _budget(opt, machine)))
        self.table.blockSignals(False)
        self.table.resizeRowsToContents()
        if self.options:
            self.table.selectRow(0)
        # The Quantize tab starts with the three best options that fit and can be made here.
        usable = [o["format"] for o in self.options if o.get("available", True) and o.get("fit") != "no"]
        if usable:
            self.chosen.emit(usable[:3])

    def selected_formats(self) -> list[str]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self.options[r]["format"] for r in rows if r < len(self.options)]

    def _selection_changed(self) -> None:
        chosen = self.selected_formats()
        if chosen:
            self.chosen.emit(chosen)


def _budget(opt: dict[str, Any], machine: dict[str, Any]) -> int | None:
    """The memory the option is measured against: RAM, VRAM, or both for a split."""
    ram, vram = machine.get("ram_total_bytes") or 0, machine.get("vram_total_bytes") or 0
    return {"cpu": ram, "cuda": vram, "split": ram + vram}.get(opt.get("device", ""), 0) or None


def _why(opt: dict[str, Any]) -> str:
    why = str(opt.get("why", ""))
    hint = opt.get("install_hint")
    return f"{why} {hint}" if hint and hint not in why else why


def _fit_bar(opt: dict[str, Any], budget: int | None) -> QProgressBar:
    fit = str(opt.get("fit", ""))
    bar = QProgressBar()
    bar.setRange(0, 100)
    peak = opt.get("peak_bytes") or 0
    # Without a budget from the engine the bar is a full coloured badge.
    bar.setValue(min(100, int(100 * peak / budget)) if budget else 100)
    bar.setFormat(FIT_TEXT.get(fit, fit))
    bar.setToolTip(f"peak {format_bytes(peak)}" + (f" of {format_bytes(budget)}" if budget else ""))
    bar.setTextVisible(True)
    bar.setProperty("fit", fit)
    bar.setStyleSheet(f"QProgressBar {{ color: {FIT_COLOUR.get(fit, 'palette(text)')}; font-weight: 600; }}")
    bar.setMinimumWidth(110)
    bar.setAlignment(Qt.AlignmentFlag.AlignCenter)
    return bar
