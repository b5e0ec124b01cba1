"""Size against quality: one point per artifact (file size, perplexity), drawn with QtCharts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCharts import QChart, QChartView, QScatterSeries, QValueAxis
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QPainter, QPalette

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

    def show_rows(self, rows: list[dict[str, Any]]) -> None:
        chart = self.chart()
        chart.removeAllSeries()
        for axis in chart.axes():
            chart.removeAxis(axis)
        points = [r for r in rows if r.get("ppl") is not None and r.get("size_bytes")]
        if not points:
            chart.setTitle("Size against quality — evaluate artifacts to plot them here")
            return
        chart.setTitle("Size against quality (lower perplexity is better)")
        big = max(r["size_bytes"] for r in points) >= GiB
        unit, scale = ("GiB", GiB) if big else ("MiB", MiB)
        x_axis, y_axis = QValueAxis(), QValueAxis()
        x_axis.setTitleText(f"File size ({unit})")
        y_axis.setTitleText("Perplexity")
        chart.addAxis(x_axis, Qt.AlignmentFlag.AlignBottom)
        chart.addAxis(y_axis, Qt.AlignmentFlag.AlignLeft)
        self._colour_axis(x_axis)
        self._colour_axis(y_axis)
        xs, ys = [], []
        for row in points:
            series = QScatterSeries()
            series.setName(row.get("name") or Path(row.get("path", "")).name)
            series.setMarkerSize(12)
            x, y = row["size_bytes"] / scale, float(row["ppl"])
            xs.append(x)
            ys.append(y)
            series.append(QPointF(x, y))
            chart.addSeries(series)
            series.attachAxis(x_axis)
            series.attachAxis(y_axis)
        pad_x = (max(xs) - min(xs)) * 0.1 or max(xs) * 0.1 or 1
        pad_y = (max(ys) - min(ys)) * 0.1 or max(ys) * 0.05 or 1
        x_axis.setRange(max(0.0, min(xs) - pad_x), max(xs) + pad_x)
        y_axis.setRange(max(0.0, min(ys) - pad_y), max(ys) + pad_y)
