"""Results: every artifact of the model with size, bits per weight, PPL, ΔPPL, KLD, tokens/s; a chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
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
from qtapp.views.handoff import HandoffRow
from qtapp.views.widgets import heading, muted, panel

COLUMNS = ["Artifact", "Format", "Size", "Bits/weight", "PPL", "ΔPPL", "KLD", "Tokens/s", "Verdict"]
VERDICT_COLUMN = COLUMNS.index("Verdict")
HEADER_TIPS = [
    "The file or folder (hover a name for its full path).",
    "The quantization type; \"original\" is the model you opened.",
    "Size on disk.",
    "Bits per weight: file size × 8 ÷ parameter count (16 for the original in F16/BF16).",
    "Perplexity on the evaluation text (lower is better); measured by Evaluate.",
    "Perplexity change against the original on the same text (closer to 0 is better).",
    "Mean KL divergence from the original's next-token distribution, in nats per token "
    "(0 = identical; about 0.01 is hard to notice, above 0.1 the output often answers differently).",
    "Generation speed in tokens per second, measured the same way for every row by Evaluate.",
    "The quick check's verdict (near-lossless, small loss, noticeable loss, broken); hover a cell for the evidence.",
]
CHART_METRICS = [("kld", "KL divergence (log scale)"), ("dppl", "ΔPPL (%)")]


class ResultsView(QWidget):
    evaluate_requested = Signal(list)
    chat_requested = Signal(Path)
    refresh_requested = Signal()
    cancel_requested = Signal(object)  # the evaluation's Job
    export_requested = Signal(str, Path)  # "lmstudio" | "ollama" | "llama-server", the selected GGUF

    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(heading("Results"))
        top.addStretch(1)
        self.refresh_btn = QPushButton("Refresh")
        self.refresh_btn.clicked.connect(self._refresh_clicked)
        self.eval_btn = QPushButton(icon("evaluate"), "&Evaluate selected")
        self.eval_btn.setToolTip("Measure perplexity, KL divergence against the original and speed (Ctrl+Enter)")
        self.eval_btn.clicked.connect(self._evaluate_clicked)
        self.chat_btn = QPushButton(icon("chat"), "C&hat with selected")
        self.chat_btn.clicked.connect(self._chat)
        for b in (self.refresh_btn, self.eval_btn, self.chat_btn):
            top.addWidget(b)
        layout.addLayout(top)
        self.summary = muted("Quantize the model to see its outputs here.")
        layout.addWidget(self.summary)
        # Which file to keep, from the quick checks' verdicts (engine.evaluate.compare.headline).
        self.headline = QLabel("")
        self.headline.setObjectName("Headline")
        self.headline.setTextFormat(Qt.TextFormat.PlainText)
        self.headline.setWordWrap(True)
        bold = self.headline.font()
        bold.setBold(True)
        self.headline.setFont(bold)
        self.headline.hide()
        layout.addWidget(self.headline)
        self.handoff = HandoffRow("Selected GGUF:")
        self.handoff.requested.connect(self.export_requested.emit)
        self.handoff.set_paths([])
        layout.addWidget(self.handoff)
        self.progress_box, box = panel()
        head = QHBoxLayout()
        self.progress_title = QLabel()
        self.progress_state = muted("")
        self.progress_state.setWordWrap(False)
        self.cancel_btn = QPushButton(icon("stop"), "Cancel")
        self.cancel_btn.clicked.connect(self._cancel_clicked)
        head.addWidget(self.progress_title, 1)
        head.addWidget(self.progress_state)
        head.addWidget(self.cancel_btn)
        box.addLayout(head)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        box.addWidget(self.progress)
        info = QHBoxLayout()
        self.progress_step = muted("")
        self.eta = muted("")
        self.eta.setWordWrap(False)
        info.addWidget(self.progress_step, 1)
        info.addWidget(self.eta)
        box.addLayout(info)
        self.progress_box.hide()
        layout.addWidget(self.progress_box)
        self._job = None
        self._started_at = 0.0
        splitter = QSplitter(Qt.Orientation.Vertical)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for col, tip in enumerate(HEADER_TIPS):
            self.table.horizontalHeaderItem(col).setToolTip(tip)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(False)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Interactive)  # elided when narrow
        self.table.setColumnWidth(1, 120)
        for col in range(2, len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        splitter.addWidget(self.table)
        self.chart_holder = QWidget()
        self.chart_layout = QVBoxLayout(self.chart_holder)
        self.chart_layout.setContentsMargins(0, 0, 0, 0)
        plot_row = QHBoxLayout()
        plot_row.addWidget(QLabel("Plot size against:"))
        self.metric_box = QComboBox()
        for key, text in CHART_METRICS:
            self.metric_box.addItem(text, key)
        self.metric_box.setToolTip("What the chart's vertical axis shows for each output")
        self.metric_box.currentIndexChanged.connect(lambda _i: self._chart().show_rows(self.rows, self._metric()))
        plot_row.addWidget(self.metric_box)
        plot_row.addStretch(1)
        self.chart_layout.addLayout(plot_row)
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
                "original" if row.get("original") else (fmt.label if fmt else row.get("format", "")),
                format_bytes(row.get("size_bytes")),
                _num(row.get("bits_per_weight"), 2),
                _num(row.get("ppl"), 3),
                _num(row.get("delta_ppl"), 3, signed=True),
                _num(row.get("kld_mean"), 4),
                _num(row.get("gen_tps"), 1),
                row.get("verdict") or "—",
            ]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(f"{text}\n{row.get('path', '')}" if c < 2 else str(row.get("path", "")))
                if c == VERDICT_COLUMN:
                    item.setToolTip(row.get("verdict_evidence") or "Not checked yet: the quick check runs after "
                                    "each quantize job when \"Check quality after quantizing\" is ticked.")
                elif c >= 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, c, item)
        measured = sum(1 for row in rows if row.get("ppl") is not None)
        self.summary.setText(
            f"{plural(len(rows), 'model')} listed, {measured} evaluated. Select rows and press Evaluate to measure "
            "perplexity, KL divergence against the original and speed."
            if rows else "Quantize the model to see its outputs here.")
        from engine.evaluate.compare import headline_of

        line = headline_of(rows) if rows else None
        self.headline.setText(line or "")
        self.headline.setVisible(bool(line))
        self._chart().show_rows(rows, self._metric())

    def _metric(self) -> str | None:
        """The chosen axis when the rows have it, else whatever they can show (the chart decides)."""
        from qtapp.views.quality_chart import is_original, quality_value

        key = self.metric_box.currentData()
        return key if any(quality_value(r, key) is not None for r in self.rows if not is_original(r)) else None

    # --- evaluations in progress ------------------------------------------------
    def watch(self, queue) -> None:
        """Show the queue's evaluations here, with their progress and ETA."""
        queue.started.connect(self._job_started)
        queue.progress.connect(self._job_progress)
        queue.finished.connect(self._job_finished)

    def _job_started(self, job) -> None:
        if job.spec.kind != "evaluate":
            return
        self._job = job
        self.progress_title.setText(f"<b>{job.spec.title}</b>")
        self.progress_state.setText("running")
        self.progress.setValue(0)
        self.progress_step.setText("Starting…")
        self.eta.setText("")
        self.cancel_btn.show()
        self.progress_box.show()
        import time

        self._started_at = time.monotonic()

    def _job_progress(self, job, event: Any) -> None:
        if job is not self._job:
            return
        from qtapp.views.jobs import duration

        fraction = getattr(event, "fraction", None)
        if fraction is not None:
            self.progress.setValue(int(1000 * max(0.0, min(1.0, fraction))))
        if getattr(event, "message", ""):
            self.progress_step.setText(event.message)
        eta = getattr(event, "eta_s", None)
        if eta is None:
            eta = _estimate_left(self._started_at, fraction)
        self.eta.setText(f"about {duration(eta)} left" if eta is not None else "")

    def _job_finished(self, job, outcome) -> None:
        if job is not self._job:
            return
        self.cancel_btn.hide()
        self.eta.setText("")
        state = {"ok": "done", "cancelled": "cancelled"}.get(outcome.status, "failed")
        self.progress_state.setText(state)
        if outcome.status == "ok":
            self.progress.setValue(1000)
            self.progress_step.setText("Measured; the numbers are in the table.")
        else:
            self.progress_step.setText(outcome.message)

    def _cancel_clicked(self) -> None:
        if self._job is not None:
            self.cancel_requested.emit(self._job)

    def selected_paths(self) -> list[Path]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [Path(self.rows[r]["path"]) for r in rows if r < len(self.rows)]

    def _selection_changed(self) -> None:
        self.handoff.set_paths(self.selected_paths())

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


def _estimate_left(started_at: float, fraction: float | None) -> float | None:
    """Where a step gives no ETA of its own: the time so far, stretched to the whole job."""
    import time

    if not fraction or fraction < 0.02 or fraction >= 1:
        return None
    elapsed = time.monotonic() - started_at
    return elapsed / fraction * (1 - fraction) if elapsed >= 1 else None


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _num(value: Any, digits: int, signed: bool = False) -> str:
    if value is None:
        return "—"
    try:
        return f"{float(value):+.{digits}f}" if signed else f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)
