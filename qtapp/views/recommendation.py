"""Recommendation: ranked options with size, peak memory at a chosen context, fit against this machine."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from engine.context_length import clamp_context, context_presets, parse_context
from engine.formats import FORMATS
from engine.units import format_bytes
from qtapp.assets import icon
from qtapp.views.widgets import heading, muted

FIT_TEXT = {"fits": "fits", "tight": "tight", "no": "too big"}
FIT_COLOUR = {"fits": "#2f9e44", "tight": "#e67700", "no": "#e03131"}
COLUMNS = ["Format", "File size", "Peak memory", "Runs on", "Fit", "In short"]
WHERE = {"cpu": "RAM", "cuda": "GPU memory", "split": "GPU and RAM"}


class RecommendationView(QWidget):
    context_changed = Signal(int)
    chosen = Signal(list)  # format ids for the Quantize tab: the ranking's first picks, or "Use these formats"
    use_requested = Signal(list)  # the user pressed "Use these formats"

    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(heading("What to turn it into"))
        top.addStretch(1)
        label = QLabel("&Context length")
        top.addWidget(label)
        self.context = QComboBox()
        self.context.setEditable(True)
        self.context.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.context.setMinimumContentsLength(22)
        self.context.setToolTip("The longest conversation you plan to hold; the KV cache grows with it. "
                                "Pick a preset or type a number (e.g. 16384 or 16k).")
        label.setBuddy(self.context)
        top.addWidget(self.context)
        layout.addLayout(top)
        self.context_note = muted("")
        self.context_note.setObjectName("ContextNote")
        self.context_note.hide()
        layout.addWidget(self.context_note)
        self.summary = muted("Open a model to see which formats fit this machine.")
        layout.addWidget(self.summary)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        header = self.table.horizontalHeader()
        for col in range(len(COLUMNS) - 1):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.detail = QTextBrowser()
        self.detail.setObjectName("WhyDetail")
        self.detail.setPlaceholderText("Select a row to read why it is ranked there.")
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.detail)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        layout.addWidget(splitter, 1)
        bottom = QHBoxLayout()
        self.use_btn = QPushButton(icon("start"), "&Use these formats")
        self.use_btn.setToolTip("Tick the selected rows' formats on the Quantize tab (Ctrl+U; Ctrl+click "
                                "selects several rows)")
        self.use_btn.clicked.connect(self._use_clicked)
        self.use_btn.setEnabled(False)
        self.hint = muted("Best first. The Quantize tab starts with the three best options that fit; select rows "
                          "and press Use these formats to choose others.")
        bottom.addWidget(self.use_btn)
        bottom.addWidget(self.hint, 1)
        layout.addLayout(bottom)
        self.options: list[dict[str, Any]] = []
        self.model_max: int | None = None
        self.value = 4096
        self._fill_presets()
        self._debounce = QTimer(self, singleShot=True, interval=300)
        self._debounce.timeout.connect(self._emit_context)
        self.context.activated.connect(self._preset_chosen)
        self.context.lineEdit().editingFinished.connect(self._typed)
        self.table.itemSelectionChanged.connect(self._selection_changed)

    # --- context length ---------------------------------------------------
    def _fill_presets(self) -> None:
        self.context.blockSignals(True)
        self.context.clear()
        for n, label in context_presets(self.model_max):
            self.context.addItem(f"{n:,} tokens · {label}", n)
        self.context.blockSignals(False)
        self._show_value()

    def _show_value(self) -> None:
        index = self.context.findData(self.value)
        self.context.blockSignals(True)
        if index >= 0:
            self.context.setCurrentIndex(index)
        self.context.setEditText(self.context.itemText(index) if index >= 0 else f"{self.value:,} tokens")
        self.context.blockSignals(False)

    def _preset_chosen(self, index: int) -> None:
        data = self.context.itemData(index)
        if data is not None and int(data) != self.value:  # Enter in the box re-activates the current item
            self.commit_context(int(data))

    def _typed(self) -> None:
        text = self.context.currentText()
        index = self.context.findText(text)
        if index >= 0 and self.context.itemData(index) is not None:
            if int(self.context.itemData(index)) != self.value:
                self.commit_context(int(self.context.itemData(index)))
            return
        n = parse_context(text)
        if n is None:
            self._note(f"“{text}” is not a number of tokens; type one, e.g. 8192 or 8k.")
            self._show_value()
            return
        self.commit_context(n)

    def commit_context(self, n: int) -> None:
        """Take a context length from the user, bringing it into range and saying so when it changed."""
        value, note = clamp_context(n, self.model_max)
        self._note(note)
        changed = value != self.value
        self.value = value
        self._show_value()
        if changed:
            self._debounce.start()

    def _note(self, text: str) -> None:
        self.context_note.setText(text)
        self.context_note.setVisible(bool(text))

    def _emit_context(self) -> None:
        self.context_changed.emit(self.value)

    def set_max_context(self, n: int | None) -> None:
        self.model_max = int(n) if n else None
        self._note("")
        self._fill_presets()

    def set_context(self, n: int) -> None:
        self.value = int(n)
        self._show_value()

    # --- the table --------------------------------------------------------
    def clear(self, text: str) -> None:
        self.options = []
        self.table.setRowCount(0)
        self.detail.clear()
        self.summary.setText(text)
        self.use_btn.setEnabled(False)

    def show_recommendation(self, rec: dict[str, Any]) -> None:
        """Render ``quantdesk recommend --json``: options best first, one short sentence each."""
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
            budget = _budget(opt, machine)
            cells = [label, format_bytes(opt.get("size_bytes")), format_bytes(opt.get("peak_bytes")),
                     str(opt.get("device", "")), fit_text(opt, budget), short_why(opt)]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(str(opt.get("why", "")) if col == len(cells) - 1 else text)
                if opt.get("available") is False:
                    item.setForeground(self.palette().placeholderText())
                self.table.setItem(row, col, item)
            fit = self.table.item(row, 4)
            fit.setForeground(QColor(FIT_COLOUR.get(str(opt.get("fit", "")), "#868e96")))
            font = fit.font()
            font.setBold(True)
            fit.setFont(font)
            fit.setData(Qt.ItemDataRole.UserRole, str(opt.get("fit", "")))
            fit.setToolTip(f"peak {format_bytes(opt.get('peak_bytes'))}"
                           + (f" of {format_bytes(budget)}" if budget else ""))
        self.table.blockSignals(False)
        if self.options:
            self.table.selectRow(0)
        self._selection_changed()
        # The Quantize tab starts with the three best options that fit and can be made here.
        usable = [o["format"] for o in self.options if o.get("available", True) and o.get("fit") != "no"]
        if usable:
            self.chosen.emit(usable[:3])

    def selected_formats(self) -> list[str]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self.options[r]["format"] for r in rows if r < len(self.options)]

    def _selection_changed(self) -> None:
        """Reading a row shows its full reasoning below; the Quantize ticks change only on Use these formats."""
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        self.use_btn.setEnabled(bool(rows))
        if not rows or rows[0] >= len(self.options):
            self.detail.clear()
            return
        parts = []
        for r in rows[:3]:
            opt = self.options[r]
            fmt = FORMATS.get(opt.get("format", ""))
            label = opt.get("label") or (fmt.label if fmt else opt.get("format", ""))
            parts.append(f"<p><b>{_esc(label)}</b> — {_esc(str(opt.get('why', '')))}</p>")
        self.detail.setHtml("".join(parts))

    def _use_clicked(self) -> None:
        chosen = self.selected_formats()
        if chosen:
            self.chosen.emit(chosen)
            self.use_requested.emit(chosen)


def _esc(text: str) -> str:
    import html

    return html.escape(text)


def _budget(opt: dict[str, Any], machine: dict[str, Any]) -> int | None:
    """The memory the option is measured against: RAM, VRAM, or both for a split."""
    ram, vram = machine.get("ram_total_bytes") or 0, machine.get("vram_total_bytes") or 0
    return {"cpu": ram, "cuda": vram, "split": ram + vram}.get(opt.get("device", ""), 0) or None


def fit_text(opt: dict[str, Any], budget: int | None) -> str:
    """The fit as a word plus the share of memory it takes, e.g. "fits · 12% of RAM"."""
    fit = str(opt.get("fit", ""))
    word = FIT_TEXT.get(fit, fit)
    peak = opt.get("peak_bytes") or 0
    if not budget or not peak:
        return word
    share = 100 * peak / budget
    shown = f"{share:.0f}%" if share >= 1 else "<1%"
    return f"{word} · {shown} of {WHERE.get(str(opt.get('device', '')), 'memory')}"


def short_why(opt: dict[str, Any]) -> str:
    """One short sentence for the row; the full reasoning is in the pane below."""
    if opt.get("available") is False:
        return "Cannot be made here yet: select the row to see what to install."
    fmt = FORMATS.get(opt.get("format", ""))
    note = (fmt.quality_note if fmt else "") or ""
    where = WHERE.get(str(opt.get("device", "")), "memory")
    fit = {"fits": f"fits in {where}", "tight": f"only just fits in {where}",
           "no": f"too big for {where}"}.get(str(opt.get("fit", "")), "")
    text = "; ".join(p for p in (note, fit) if p)
    return (text[:1].upper() + text[1:] + ".") if text else str(opt.get("why", "")).split(". ")[0]
