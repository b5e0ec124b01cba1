"""One job over two backends (GGUF then bitsandbytes) on the tiny model."""

from __future__ import annotations

import pytest

from engine.errors import JobCancelled
from engine.jobs import CancelToken
from tests.fixtures.quantize import run_quantize


def test_mixed_job_makes_both_kinds(tiny_dir, tmp_path):
    out = tmp_path / "out"
    result = run_quantize(tiny_dir, "Q4_0,bnb-nf4", out, device="cpu")
    assert set(result["outputs"]) == {"Q4_0", "bnb-nf4"}
    fractions = [e.fraction for e in result["events"]]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert (out / "README.md").is_file()


def test_cancel_in_second_backend_removes_first_backends_outputs(tiny_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    cancel = CancelToken()
    gguf_done_before_cancel = []

    def on_progress(event) -> None:
        # Past half-way the bitsandbytes backend is running and the GGUF file is finished.
        if event.fraction > 0.5 and (out / "tiny-Q4_0.gguf").is_file() and not cancel.cancelled:
            gguf_done_before_cancel.append(True)
            cancel.cancel()

    with pytest.raises(JobCancelled):
        run_quantize(tiny_dir, "Q4_0,bnb-nf4", out, cancel=cancel, on_progress=on_progress, device="cpu")
    assert gguf_done_before_cancel
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
