"""The Results chart: size against KLD or ΔPPL from real quick checks, every point labelled, the pick marked."""

from __future__ import annotations

import pytest

from engine.artifacts import write_sidecar
from engine.jobs import run_job


@pytest.mark.slow
def test_chart_plots_checked_outputs_with_labels_original_and_pick(qtbot, chat_ggufs, tmp_path):
    from PySide6.QtCharts import QLineSeries, QLogValueAxis, QValueAxis

    from engine.evaluate.compare import recommended_path
    from engine.evaluate.quick_check import quick_check_all
    from qtapp.controller import _library
    from qtapp.views.results import COLUMNS, ResultsView

    source = chat_ggufs["F16"]
    out = tmp_path / "out"
    out.mkdir()
    outputs = []
    for name in ("Q8_0", "Q4_K_M"):
        path = out / f"smollm2-{name}.gguf"
        path.symlink_to(chat_ggufs[name])
        write_sidecar(path, format=f"gguf:{name}", source=source)
        outputs.append(path)
    records = run_job(quick_check_all(outputs, source, threads=2, names=["Q8_0", "Q4_K_M"]))
    assert records[0]["original_cached"] is False and records[1]["original_cached"] is False  # one child, one pass

    rows = _library(source, [out])
    view = ResultsView()
    qtbot.addWidget(view)
    view.show_rows(rows)
    chart = view.chart
    assert chart.metric == "kld"
    series = {s.name(): s for s in chart.chart().series()}
    assert {"Q8_0", "Q4_K_M", "original"} <= set(series)
    for name, record in zip(("Q8_0", "Q4_K_M"), records, strict=True):
        point = series[name].points()[0]
        assert series[name].pointLabelsVisible() and series[name].pointLabelsFormat() == name
        assert point.y() == pytest.approx(record["kld_mean"])
        assert point.x() == pytest.approx((out / f"smollm2-{name}.gguf").stat().st_size / 1024**2)
    assert isinstance(series["original"], QLineSeries)  # KLD 0 has no place on a log axis: a line at its size
    assert series["original"].points()[0].x() == pytest.approx(source.stat().st_size / 1024**2)
    assert any(isinstance(a, QLogValueAxis) for a in chart.chart().axes())

    keep = recommended_path(rows)
    assert keep is not None  # Q8_0 is near-lossless or small loss on the demo model
    kept = "Q8_0" if keep.endswith("Q8_0.gguf") else "Q4_K_M"
    assert chart.recommended == kept and f"Keep {kept}" in series
    assert series[f"Keep {kept}"].points()[0] == series[kept].points()[0]
    assert view.headline.text().startswith(f"Keep {kept}")

    view.metric_box.setCurrentIndex(view.metric_box.findData("dppl"))
    assert chart.metric == "dppl" and not any(isinstance(a, QLogValueAxis) for a in chart.chart().axes())
    assert all(isinstance(a, QValueAxis) for a in chart.chart().axes())
    dppl = {s.name(): s.points()[0].y() for s in chart.chart().series()}
    assert dppl["original"] == 0.0 and dppl["Q4_K_M"] == pytest.approx(records[1]["delta_ppl_pct"])

    tips = [view.table.horizontalHeaderItem(c).toolTip() for c in range(len(COLUMNS))]
    assert all(tips) and len(set(tips)) == len(COLUMNS)
    assert "KL divergence" in tips[COLUMNS.index("KLD")]
