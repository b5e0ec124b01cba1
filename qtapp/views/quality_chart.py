"""Size against quality: one labelled point per output (file size, KLD or ΔPPL), drawn with QtCharts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PySide6.QtCharts import QChart, QChartView, QLineSeries, QLogValueAxis, QScatterSeries, QValueAxis
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QColor, QPainter, QPalette, QPen

GiB = 1024**3
MiB = 1024**2


class QualityChart(QChartView):
    def __init__(self) -> None:
        chart = QChart()
        chart.setTitle("Size against quality (lower perplexity is better)")
        chart.legend().setAlignment(Qt.AlignmentFlag.AlignRight)
        chart.setBackgroundRoundness(4)
        super().__init__(chart)
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setMinimumHeight(180)
        self.follow_palette()

    def is_dark(self) -> bool:
        return self.palette().color(QPalette.ColorRole.Window).lightness() < 128

    def follow_palette(self) -> None:
        """Light or dark like the rest of the window (QtCharts keeps its own light theme otherwise)."""
        chart = self.chart()
        chart.setTheme(QChart.ChartTheme.ChartThemeDark if self.is_dark() else QChart.ChartTheme.ChartThemeLight)
        palette = self.palette()
        chart.setBackgroundBrush(palette.color(QPalette.ColorRole.Base))
        chart.setTitleBrush(palette.color(QPalette.ColorRole.Text))
        chart.legend().setLabelColor(palette.color(QPalette.ColorRole.Text))
        for axis in chart.axes():
            self._colour_axis(axis)
        self.setBackgroundBrush(palette.color(QPalette.ColorRole.Window))

    def _colour_axis(self, axis) -> None:
        palette = self.palette()
        axis.setLabelsColor(palette.color(QPalette.ColorRole.Text))
        axis.setTitleBrush(palette.color(QPalette.ColorRole.Text))
        axis.setGridLineColor(palette.color(QPalette.ColorRole.Mid))

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self.follow_palette()

    def show_rows(self, rows: list[dict[str, Any]], metric: str | None = None) -> None:
        """One labelled point per output; the original shown; the recommended file marked.

        ``metric`` is "kld" (mean KL divergence, log scale), "dppl" (perplexity
        change in %) or "ppl"; None picks KLD when any output has one, then ΔPPL,
        then plain perplexity (an original evaluated on its own).
        """
        from engine.evaluate.compare import recommended_path

        chart = self.chart()
        chart.removeAllSeries()
        for axis in chart.axes():
            chart.removeAxis(axis)
        self.points: dict[str, tuple[float, float]] = {}
        self.recommended = None
        self.metric = metric = metric or pick_metric(rows)
        points = [(r, quality_value(r, metric)) for r in rows if r.get("size_bytes")]
        points = [(r, v) for r, v in points if v is not None and (metric != "kld" or v > 0)]
        original = next((r for r in rows if is_original(r) and r.get("size_bytes")), None)
        if not points:
            chart.setTitle("Size against quality — evaluate artifacts to plot them here")
            return
        chart.setTitle(TITLES[metric])
        sizes = [r["size_bytes"] for r, _ in points] + ([original["size_bytes"]] if original else [])
        big = max(sizes) >= GiB
        unit, scale = ("GiB", GiB) if big else ("MiB", MiB)
        x_axis = QValueAxis()
        y_axis = QLogValueAxis() if metric == "kld" else QValueAxis()
        if metric == "kld":
            y_axis.setBase(10.0)
            y_axis.setLabelFormat("%.3g")
        x_axis.setTitleText(f"File size ({unit})")
        y_axis.setTitleText(AXIS_TITLES[metric])
        chart.addAxis(x_axis, Qt.AlignmentFlag.AlignBottom)
        chart.addAxis(y_axis, Qt.AlignmentFlag.AlignLeft)
        self._colour_axis(x_axis)
        self._colour_axis(y_axis)
        keep = recommended_path(rows)
        xs = [s / scale for s in sizes]
        ys = [v for _, v in points]
        for row, value in points:
            label = "original" if is_original(row) else type_label(row)
            x = row["size_bytes"] / scale
            series = QScatterSeries()
            series.setName(label)
            series.setMarkerSize(12)
            if is_original(row):
                series.setMarkerShape(QScatterSeries.MarkerShape.MarkerShapeRectangle)
            series.append(QPointF(x, value))
            series.setPointLabelsFormat(label)
            series.setPointLabelsVisible(True)
            series.setPointLabelsClipping(False)
            self._add(series, x_axis, y_axis)
            self.points[label] = (x, value)
            if keep and row.get("path") == keep:
                mark = QScatterSeries()
                mark.setName(f"Keep {label}")
                mark.setMarkerShape(QScatterSeries.MarkerShape.MarkerShapeStar)
                mark.setMarkerSize(26)
                mark.setBrush(Qt.GlobalColor.transparent)
                mark.setPen(QPen(QColor("#d08700"), 2.5))
                mark.append(QPointF(x, value))
                self._add(mark, x_axis, y_axis)
                self.recommended = label
        lo_y, hi_y = _y_range(ys, metric)
        if original is not None and "original" not in self.points:
            # The original has no loss to plot (KLD 0): a dashed line at its size.
            x = original["size_bytes"] / scale
            line = QLineSeries()
            line.setName("original")
            line.setPen(QPen(self.palette().color(QPalette.ColorRole.Text), 1.5, Qt.PenStyle.DashLine))
            line.append(QPointF(x, lo_y))
            line.append(QPointF(x, hi_y))
            line.setPointLabelsFormat("original")
            self._add(line, x_axis, y_axis)
            self.points["original"] = (x, lo_y)
        pad_x = (max(xs) - min(xs)) * 0.1 or max(xs) * 0.1 or 1
        x_axis.setRange(max(0.0, min(xs) - pad_x), max(xs) + pad_x)
        y_axis.setRange(lo_y, hi_y)

    recommended: str | None = None
    metric: str = "ppl"

    def _add(self, series: Any, x_axis: Any, y_axis: Any) -> None:
        self.chart().addSeries(series)
        series.attachAxis(x_axis)
        series.attachAxis(y_axis)


TITLES = {
    "kld": "Size against KL divergence from the original (lower is better, log scale)",
    "dppl": "Size against perplexity change from the original (lower is better)",
    "ppl": "Size against quality (lower perplexity is better)",
}
AXIS_TITLES = {"kld": "Mean KLD (nats/token)", "dppl": "ΔPPL (%)", "ppl": "Perplexity"}
_FULL = ("gguf:F32", "gguf:F16", "gguf:BF16", "hf:fp16")


def is_original(row: dict[str, Any]) -> bool:
    return bool(row.get("original")) or row.get("format") in _FULL


def type_label(row: dict[str, Any]) -> str:
    """The type a point stands for: Q4_K_M, NF4…; the file's name when the format is unknown."""
    fmt = str(row.get("format") or "")
    return fmt.split(":", 1)[1] if ":" in fmt else (row.get("name") or Path(row.get("path", "")).name)


def _num(row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def quality_value(row: dict[str, Any], metric: str) -> float | None:
    """KLD (from eval, else the quick check), ΔPPL in % (eval, else the quick check) or PPL of one row."""
    if metric == "kld":
        return None if is_original(row) else _num(row, "kld_mean") or _num(row, "check_kld_mean")
    if metric == "dppl":
        if is_original(row):
            return 0.0
        ppl, delta = _num(row, "ppl"), _num(row, "delta_ppl")
        if ppl is not None and delta is not None and ppl - delta > 0:
            return 100.0 * delta / (ppl - delta)
        return _num(row, "check_delta_ppl_pct")
    return _num(row, "ppl")


def pick_metric(rows: list[dict[str, Any]]) -> str:
    outputs = [r for r in rows if not is_original(r)]
    for metric in ("kld", "dppl"):
        if any(quality_value(r, metric) is not None for r in outputs):
            return metric
    return "ppl"


def _y_range(ys: list[float], metric: str) -> tuple[float, float]:
    if metric == "kld":
        lo, hi = min(ys), max(ys)
        return 10 ** math.floor(math.log10(lo) - 0.2), 10 ** math.ceil(math.log10(hi) + 0.2)
    pad = (max(ys) - min(ys)) * 0.1 or abs(max(ys)) * 0.05 or 1
    low = min(ys) - pad
    return (max(0.0, low) if metric == "ppl" else low), max(ys) + pad
