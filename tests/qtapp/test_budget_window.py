""""Best under … GB" on the Quantize tab: the size-budget search (engine.autopick) from the real window."""

from __future__ import annotations

import math
from pathlib import Path

import pytest


@pytest.mark.slow
def test_best_under_a_budget_keeps_one_file_within_it(qtbot, main_window, smollm2_gguf, tmp_path):
    from engine.artifacts import read_sidecar

    window = main_window
    source = smollm2_gguf["F16"]  # the demo model as a GGUF: no conversion, the window's path is the same
    q4, q8 = smollm2_gguf["Q4_K_M"].stat().st_size, smollm2_gguf["Q8_0"].stat().st_size
    budget_gb = math.ceil((q4 + 400_000) / 1e6) / 1000  # just above Q4_K_M: few candidates fit, Q8_0 does not
    budget = round(budget_gb * 1e9)
    assert q4 < budget < q8
    window.open_model(source)
    qtbot.waitUntil(lambda: window.session.model_path == source and bool(window.session.model_info)
                    and not window.session.busy, timeout=60_000)
    window.show_tab("quantize")
    quantize = window.quantize
    quantize.threads.setValue(2)
    quantize.preselect([])
    assert not window.start_action.isEnabled()  # nothing ticked, no budget: nothing to start
    quantize.budget_on.setChecked(True)
    assert quantize.budget.isEnabled() and not any(b.isEnabled() for b in quantize.boxes.values())
    quantize.budget.setValue(budget_gb)
    assert window.start_action.isEnabled() and quantize.choice().max_bytes == budget
    quantize.start.click()
    qtbot.waitUntil(lambda: bool(window.queue.jobs) and window.queue.jobs[-1].finished, timeout=900_000)
    job = window.queue.jobs[-1]
    assert job.state == "done", job.outcome.message
    assert "best under" in job.spec.title
    kept = Path(job.outcome.value[0].path)
    out = tmp_path / "out"
    assert kept.parent == out and kept.stat().st_size <= budget
    assert sorted(p.name for p in out.glob("*.gguf")) == [kept.name]  # the other candidates went again
    pick = read_sidecar(kept).evaluation["autopick"]
    assert pick["max_bytes"] == budget and kept.name == f"smollm2-{pick['chosen']}.gguf"
    made = [row for row in pick["candidates"] if row.get("made")]
    assert made and all(row["size_bytes"] <= budget for row in made)
    card = quantize.job_list.rows[-1]
    assert card.state.text() == "done" and card.verdicts.text()  # the chosen file's verdict on its card
