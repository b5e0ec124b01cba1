"""One job over two backends (GGUF then bitsandbytes) on the tiny model."""

from __future__ import annotations

import pytest

from engine.errors import JobCancelled
from engine.jobs import CancelToken
from tests.fixtures.gguf import run_quantize


def test_mixed_job_makes_both_kinds(tiny_dir, tmp_path):
    out = tmp_path / "out"
    result = run_quantize(tiny_dir, "Q4_0,bnb-nf4", out, device="cpu")
    assert set(result["outputs"]) == {"Q4_0", "bnb-nf4"}
    fractions = [e.fraction for e in result["events"]]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert (out / "README.md").is_file()


def test_cancel_in_second_backend_removes_first_backends_outputs(tiny_dir, tmp_path):
    from engine.backends import QuantizeRequest
    from engine.formats import parse_targets
    from engine.quantize import quantize

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    cancel = CancelToken()
    request = QuantizeRequest(source=tiny_dir, targets=parse_targets("Q4_0,bnb-nf4"), out_dir=out, device="cpu")
    gguf_done_before_cancel = False
    with pytest.raises(JobCancelled):
        for event in quantize(request, cancel):
            # Past half-way the bitsandbytes backend is running and the GGUF file is finished.
            if event.fraction > 0.5 and (out / "tiny-Q4_0.gguf").is_file():
                gguf_done_before_cancel = True
                cancel.cancel()
    assert gguf_done_before_cancel
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
