"""Results: every artifact of the model with size, bits per weight, PPL, ΔPPL, KLD, tokens/s; a chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.formats import FORMATS
from engine.units import format_bytes
from qtapp.assets import icon
from qtapp.views.widgets import heading, muted

COLUMNS = ["Artifact", "Format", "Size", "Bits/weight", "PPL", "ΔPPL", "KLD", "Tokens/s"]


class ResultsView(QWidget):
    evaluate_requested = Signal(list)
    chat_requested = Signal(Path)
    refresh_requested = Signal()

    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(heading("Results"))
        top.addStretch(1)
        self.refresh_btn = QPushButton("Refresh")
        self.refresh_btn.clicked.connect(self._refresh_clicked)
        self.eval_btn = QPushButton(icon("evaluate"), "Evaluate selected")
        self.eval_btn.clicked.connect(self._evaluate_clicked)
        self.chat_btn = QPushButton(icon("chat"), "Chat with selected")
        self.chat_btn.clicked.connect(self._chat)
        for b in (self.refresh_btn, self.eval_btn, self.chat_btn):
            top.addWidget(b)
        layout.addLayout(top)
        self.summary = muted("Quantize the model to see its outputs here.")
        layout.addWidget(self.summary)
        splitter = QSplitter(Qt.Orientation.Vertical)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        splitter.addWidget(self.table)
        self.chart_holder = QWidget()
        self.chart_layout = QVBoxLayout(self.chart_holder)
        self.chart_layout.setContentsMargins(0, 0, 0, 0)
        self.chart = None
        splitter.addWidget(self.chart_holder)
        splitter.setSizes([300, 300])
        layout.addWidget(splitter, 1)
        self.rows: list[dict[str, Any]] = []

    def show_rows(self, rows: list[dict[str, Any]]) -> None:
        """Render the engine's comparison rows (one per artifact, the original first when known)."""
        self.rows = rows
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            fmt = FORMATS.get(row.get("format", ""))
            cells = [
                row.get("name") or Path(row.get("path", "")).name,
                ("original · " if row.get("original") else "") + (fmt.label if fmt else row.get("format", "")),
                format_bytes(row.get("size_bytes")),
                _num(row.get("bits_per_weight"), 2),
                _num(row.get("ppl"), 3),
                _num(row.get("delta_ppl"), 3, signed=True),
                _num(row.get("kld_mean"), 4),
                _num(row.get("gen_tps"), 1),
            ]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(str(row.get("path", "")))
                if c >= 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, c, item)
        measured = sum(1 for row in rows if row.get("ppl") is not None)
        self.summary.setText(
            f"{len(rows)} artifact(s), {measured} evaluated. Select rows and press Evaluate to measure "
            "perplexity, KL divergence against the original and speed."
            if rows else "Quantize the model to see its outputs here.")
        self._chart().show_rows(rows)

    def selected_paths(self) -> list[Path]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [Path(self.rows[r]["path"]) for r in rows if r < len(self.rows)]

    def _refresh_clicked(self) -> None:
        self.refresh_requested.emit()

    def _evaluate_clicked(self) -> None:
        self.evaluate_requested.emit(self.selected_paths())

    def _chat(self) -> None:
        paths = self.selected_paths()
        if paths:
            self.chat_requested.emit(paths[0])

    def _chart(self):
        # QtCharts loads only when results are first shown, keeping start-up light.
        if self.chart is None:
            from qtapp.views.quality_chart import QualityChart

            self.chart = QualityChart()
            self.chart_layout.addWidget(self.chart)
        return self.chart


def _num(value: Any, digits: int, signed: bool = False) -> str:
    if value is None:
        return "—"
    try:
        return f"{float(value):+.{digits}f}" if signed else f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)
